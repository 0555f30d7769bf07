// Deploys and wires the fedledger contracts. Used by scripts/deploy.js (against a node) and by the tests
// (in-process network), so both exercise the same wiring.
const fs = require("fs");
const path = require("path");
const { P } = require("./paramTable");

const DEV_CHAIN_IDS = new Set([31337n, 1337n]);
// The dev chain's guardian: Hardhat's account #19 (public key, like every dev account; never the deployer #0,
// which is also the dev operator, the aggregator #1 or the model signer #2).
const DEV_GUARDIAN_INDEX = 19;

function envInt(name, fallback) {
  const v = process.env[name];
  return v === undefined || v === "" ? (fallback === undefined ? undefined : BigInt(fallback)) : BigInt(v);
}

/**
 * @param hre Hardhat runtime environment.
 * @param opts.deployer, opts.aggregator, opts.guardian signers/addresses (defaults on the dev chain: dev accounts
 *   #0, #1 and #19; elsewhere FEDLEDGER_AGGREGATOR_ADDRESS and FEDLEDGER_GUARDIAN_ADDRESS, both required).
 * @returns {contracts, addresses, config}
 */
async function deployAll(hre, opts = {}) {
  const { ethers } = hre;
  const signers = await ethers.getSigners();
  const chainId = (await ethers.provider.getNetwork()).chainId;
  const isDev = DEV_CHAIN_IDS.has(chainId);
  const deployer = opts.deployer || signers[0];
  const aggregatorAddress = opts.aggregator || process.env.FEDLEDGER_AGGREGATOR_ADDRESS || (isDev ? signers[1].address : undefined);
  if (!aggregatorAddress) throw new Error("FEDLEDGER_AGGREGATOR_ADDRESS must be set outside the dev chain");
  // Stops a stolen operational key faster than governance can: cancels rewards roots and pending slashes in
  // their windows, revokes the aggregator's roles, reinstates organizations. Not the timelock, not the aggregator.
  const guardianAddress = opts.guardian || process.env.FEDLEDGER_GUARDIAN_ADDRESS || (isDev ? signers[DEV_GUARDIAN_INDEX].address : undefined);
  if (!guardianAddress) throw new Error("FEDLEDGER_GUARDIAN_ADDRESS must be set outside the dev chain (an account of its own, not the aggregator's)");
  if (guardianAddress.toLowerCase() === aggregatorAddress.toLowerCase()) {
    throw new Error("the guardian must not be the aggregator: it exists to stop a stolen aggregator key");
  }

  const WAD = 10n ** 18n;
  const config = {
    tokenName: process.env.FEDLEDGER_TOKEN_NAME || "Federated Learning Reward",
    tokenSymbol: process.env.FEDLEDGER_TOKEN_SYMBOL || "DALLA",
    genesisSupply: envInt("FEDLEDGER_GENESIS_SUPPLY", 1_000_000n * WAD),
    devGrant: envInt("FEDLEDGER_DEV_GRANT", 10_000n * WAD),
    // Blocks. The dev defaults keep a whole proposal lifecycle to a few dozen blocks.
    votingDelay: envInt("FEDLEDGER_GOV_VOTING_DELAY", isDev ? 1n : 7200n),
    votingPeriod: envInt("FEDLEDGER_GOV_VOTING_PERIOD", isDev ? 20n : 50400n),
    // Token wei; never zero (FLGovernor refuses it).
    proposalThreshold: envInt("FEDLEDGER_GOV_PROPOSAL_THRESHOLD", 1_000n * WAD),
    quorumPercent: envInt("FEDLEDGER_GOV_QUORUM_PERCENT", 4n),
    // Seconds.
    timelockDelay: envInt("FEDLEDGER_TIMELOCK_DELAY", isDev ? 10n : 2n * 24n * 3600n),
    // Governed parameters set before the deployer hands GOVERNOR_ROLE to the timelock. Undefined keeps the
    // contract's default. The dev chain claims at once (dispute window 0) so a local run pays immediately.
    disputeWindow: envInt("FEDLEDGER_DISPUTE_WINDOW", opts.disputeWindow ?? (isDev ? 0n : undefined)),
    emissionCapPerPeriod: envInt("FEDLEDGER_EMISSION_CAP", opts.emissionCapPerPeriod),
    emissionPeriod: envInt("FEDLEDGER_EMISSION_PERIOD", opts.emissionPeriod),
    // Security settings of the contracts that enforce them (undefined keeps the contract's default): seconds a
    // slash beyond the prompt part waits (1 day), the prompt part in basis points of a stake (1000), the
    // largest step between recorded round ids (1024).
    slashDelay: envInt("FEDLEDGER_SLASH_DELAY", opts.slashDelay),
    promptSlashBps: envInt("FEDLEDGER_PROMPT_SLASH_BPS", opts.promptSlashBps),
    maxRoundGap: envInt("FEDLEDGER_MAX_ROUND_GAP", opts.maxRoundGap),
  };

  const d = deployer;
  const deployBlock = await ethers.provider.getBlockNumber();
  const Timelock = await ethers.getContractFactory("Timelock", d);
  // The deployer is the timelock's temporary admin while wiring, and renounces at the end.
  const timelock = await Timelock.deploy(config.timelockDelay, [], [ethers.ZeroAddress], d.address);
  await timelock.waitForDeployment();

  const Token = await ethers.getContractFactory("RewardToken", d);
  const token = await Token.deploy(config.tokenName, config.tokenSymbol, d.address, d.address, config.genesisSupply);
  await token.waitForDeployment();

  const Params = await ethers.getContractFactory("ProtocolParameters", d);
  const params = await Params.deploy(d.address);
  await params.waitForDeployment();

  // The ledger trusts one immutable claims counter, the distributor, deployed right after it: its address is
  // fixed by the deployer's next nonce (checked below).
  const nonce = await ethers.provider.getTransactionCount(d.address, "pending");
  const distributorAddress = ethers.getCreateAddress({ from: d.address, nonce: nonce + 1 });
  const Ledger = await ethers.getContractFactory("ContributionLedger", d);
  const ledger = await Ledger.deploy(await params.getAddress(), distributorAddress, d.address, { nonce });
  await ledger.waitForDeployment();

  const Distributor = await ethers.getContractFactory("RewardDistributor", d);
  const distributor = await Distributor.deploy(await token.getAddress(), await ledger.getAddress(), { nonce: nonce + 1 });
  await distributor.waitForDeployment();
  if ((await distributor.getAddress()) !== distributorAddress) throw new Error("RewardDistributor not at the address the ledger expects");

  const Registry = await ethers.getContractFactory("ParticipantRegistry", d);
  const registry = await Registry.deploy(await token.getAddress(), await params.getAddress(), await ledger.getAddress(),
    d.address, await timelock.getAddress());
  await registry.waitForDeployment();

  const Governor = await ethers.getContractFactory("FLGovernor", d);
  const governor = await Governor.deploy(
    await token.getAddress(), await timelock.getAddress(),
    config.votingDelay, config.votingPeriod, config.proposalThreshold, config.quorumPercent,
  );
  await governor.waitForDeployment();

  const tl = await timelock.getAddress();
  const send = async (p) => (await p).wait();

  // Operational roles.
  await send(token.grantRole(await token.MINTER_ROLE(), await distributor.getAddress()));
  await send(ledger.grantRole(await ledger.AGGREGATOR_ROLE(), aggregatorAddress));
  await send(registry.grantRole(await registry.AGGREGATOR_ROLE(), aggregatorAddress));
  await send(registry.grantRole(await registry.SLASHER_ROLE(), aggregatorAddress));
  if (guardianAddress.toLowerCase() === tl.toLowerCase()) throw new Error("the guardian must not be the timelock");
  await send(ledger.grantRole(await ledger.GUARDIAN_ROLE(), tl));
  await send(ledger.grantRole(await ledger.GUARDIAN_ROLE(), guardianAddress));
  await send(registry.grantRole(await registry.GUARDIAN_ROLE(), guardianAddress));
  if (config.slashDelay !== undefined) await send(registry.setSlashDelay(config.slashDelay));
  if (config.promptSlashBps !== undefined) await send(registry.setPromptSlashBps(config.promptSlashBps));
  if (config.maxRoundGap !== undefined) await send(ledger.setMaxRoundGap(config.maxRoundGap));
  for (const [name, value] of [["DisputeWindow", config.disputeWindow], ["EmissionCapPerPeriod", config.emissionCapPerPeriod],
    ["EmissionPeriod", config.emissionPeriod]]) {
    if (value !== undefined) await send(params.setParameter(P[name], value));
  }
  await send(params.grantRole(await params.GOVERNOR_ROLE(), tl));
  await send(timelock.grantRole(await timelock.PROPOSER_ROLE(), await governor.getAddress()));
  await send(timelock.grantRole(await timelock.CANCELLER_ROLE(), await governor.getAddress()));

  // Dev chain only: fund the organizations' dev accounts (#3..) so they can stake and vote.
  const devFunded = [];
  if (isDev && config.devGrant > 0n) {
    for (const s of signers.slice(3)) {
      await send(token.transfer(s.address, config.devGrant));
      await send(token.connect(s).delegate(s.address));
      devFunded.push(s.address);
    }
  }
  // The rest of the genesis allocation is the treasury's.
  const rest = await token.balanceOf(d.address);
  if (rest > 0n) await send(token.transfer(tl, rest));

  // Every admin role to the timelock; the deployer keeps nothing.
  for (const c of [token, params, registry, ledger]) {
    const admin = await c.DEFAULT_ADMIN_ROLE();
    await send(c.grantRole(admin, tl));
    await send(c.renounceRole(admin, d.address));
  }
  await send(params.renounceRole(await params.GOVERNOR_ROLE(), d.address));
  await send(timelock.renounceRole(await timelock.DEFAULT_ADMIN_ROLE(), d.address));

  const contracts = { RewardToken: token, ProtocolParameters: params, ParticipantRegistry: registry,
    RewardDistributor: distributor, ContributionLedger: ledger, FLGovernor: governor, Timelock: timelock };
  const addresses = {};
  for (const [name, c] of Object.entries(contracts)) addresses[name] = await c.getAddress();
  return { contracts, addresses, config, chainId, deployBlock, deployer: d.address, aggregator: aggregatorAddress,
    guardian: guardianAddress, devFunded };
}

/** Writes the deployments file the Python side reads (atomically: temp file then rename). */
async function writeDeployments(hre, result, outPath) {
  const out = { network: hre.network.name, chainId: Number(result.chainId), deployBlock: result.deployBlock,
    deployer: result.deployer, aggregator: result.aggregator, guardian: result.guardian, devFunded: result.devFunded,
    governance: Object.fromEntries(["votingDelay", "votingPeriod", "quorumPercent", "timelockDelay", "proposalThreshold"]
      .map((k) => [k, result.config[k] > BigInt(Number.MAX_SAFE_INTEGER) ? String(result.config[k]) : Number(result.config[k])])),
    token: { name: result.config.tokenName, symbol: result.config.tokenSymbol },
    contracts: {} };
  for (const [name, address] of Object.entries(result.addresses)) {
    const artifact = await hre.artifacts.readArtifact(name);
    out.contracts[name] = { address, abi: artifact.abi };
  }
  fs.mkdirSync(path.dirname(outPath), { recursive: true });
  const tmp = `${outPath}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(out, null, 2));
  fs.renameSync(tmp, outPath);
  return out;
}

module.exports = { deployAll, writeDeployments, DEV_GUARDIAN_INDEX };
