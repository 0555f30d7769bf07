// npx hardhat run scripts/deploy.js --network localhost
// Deploys everything to a running node, wires roles, hands admin to the timelock, and writes
// deployments/<network>.json (or FEDLEDGER_DEPLOYMENTS_OUT) for the Python side.
const path = require("path");
const hre = require("hardhat");
const { deployAll, writeDeployments } = require("./deployLib");

async function main() {
  const result = await deployAll(hre);
  const outPath = process.env.FEDLEDGER_DEPLOYMENTS_OUT || path.join(__dirname, "..", "deployments", `${hre.network.name}.json`);
  await writeDeployments(hre, result, outPath);
  console.log(`deployed to chain ${result.chainId}; wrote ${outPath}`);
  for (const [name, address] of Object.entries(result.addresses)) console.log(`  ${name.padEnd(20)} ${address}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
