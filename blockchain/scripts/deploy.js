// npx hardhat run scripts/deploy.js --network localhost
// Deploys everything to a running node, wires roles, hands admin to the timelock, and writes
// deployments/<network>.json (or FEDLEDGER_DEPLOYMENTS_OUT) for the Python side.
const path = require("path");
const hre = require("hardhat");
const { deployAll, writeDeployments } = require("./deployLib");

// The Hardhat/Anvil dev mnemonic's accounts: public keys, never an aggregator in production.
const DEV_MNEMONIC = "test test test test test test test test test test test junk";

function devAddresses(ethers, count = 20) {
  const root = ethers.HDNodeWallet.fromPhrase(DEV_MNEMONIC, undefined, "m/44'/60'/0'/0");
  return new Set(Array.from({ length: count }, (_, i) => root.deriveChild(i).address.toLowerCase()));
}

async function main() {
  const { ethers } = hre;
  const production = (process.env.FEDLEDGER_ENV || "").toLowerCase() === "production";
  const aggregator = process.env.FEDLEDGER_AGGREGATOR_ADDRESS || "";
  if (production && !aggregator) {
    throw new Error("FEDLEDGER_ENV=production: set FEDLEDGER_AGGREGATOR_ADDRESS to the address of FEDLEDGER_AGGREGATOR_PRIVATE_KEY");
  }
  if (production && devAddresses(ethers).has(aggregator.toLowerCase())) {
    throw new Error(`FEDLEDGER_ENV=production: FEDLEDGER_AGGREGATOR_ADDRESS ${aggregator} is a public dev account; use an address of your own`);
  }
  const guardian = process.env.FEDLEDGER_GUARDIAN_ADDRESS || "";
  if (production && !guardian) {
    throw new Error("FEDLEDGER_ENV=production: set FEDLEDGER_GUARDIAN_ADDRESS (a key kept apart from the servers) to stop a stolen aggregator key");
  }
  if (production && devAddresses(ethers).has(guardian.toLowerCase())) {
    throw new Error(`FEDLEDGER_ENV=production: FEDLEDGER_GUARDIAN_ADDRESS ${guardian} is a public dev account; use an address of your own`);
  }
  const result = await deployAll(hre);
  // A fresh aggregator on a local chain (docker compose's node) needs ETH for gas: the deployer funds it.
  const chainId = Number((await ethers.provider.getNetwork()).chainId);
  if ([31337, 1337].includes(chainId) && (await ethers.provider.getBalance(result.aggregator)) === 0n) {
    const [funder] = await ethers.getSigners();
    await (await funder.sendTransaction({ to: result.aggregator, value: ethers.parseEther("100") })).wait();
    console.log(`funded the aggregator ${result.aggregator} with 100 ETH (local chain ${chainId})`);
  }
  const outPath = process.env.FEDLEDGER_DEPLOYMENTS_OUT || path.join(__dirname, "..", "deployments", `${hre.network.name}.json`);
  await writeDeployments(hre, result, outPath);
  console.log(`deployed to chain ${result.chainId}; wrote ${outPath}`);
  for (const [name, address] of Object.entries(result.addresses)) console.log(`  ${name.padEnd(20)} ${address}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
