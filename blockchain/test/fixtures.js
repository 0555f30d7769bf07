const hre = require("hardhat");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const { deployAll } = require("../scripts/deployLib");

const { ethers } = hre;
const WAD = 10n ** 18n;

/** The deployed system as the deploy script wires it, plus named dev signers. */
async function deployedSystem() {
  return deploySystem({});
}

/** The same wiring with a one-hour dispute window and account #2 as guardian (the production shape). */
async function guardedSystem() {
  const signers = await ethers.getSigners();
  return deploySystem({ disputeWindow: 3600n, guardian: signers[2].address });
}

/** The default deployment's security parameters: the contracts' one-day dispute window (the dev deploy sets 0)
 * and the deploy script's default guardian (dev account #19). */
async function defaultsSystem() {
  return deploySystem({ disputeWindow: 86_400n });
}

async function deploySystem(opts) {
  const signers = await ethers.getSigners();
  const result = await deployAll(hre, opts);
  const [deployer, aggregator, modelSigner, ...orgs] = signers;
  const guardian = signers.find((s) => s.address === result.guardian);
  return { ...result.contracts, result, deployer, aggregator, modelSigner, guardian, orgs };
}

/** Rewards tree exactly as the contracts verify it (OpenZeppelin's standard double-hashed leaves). */
function rewardsTree(roundId, entries) {
  return StandardMerkleTree.of(entries.map(([account, amount]) => [roundId, account, amount]), ["uint256", "address", "uint256"]);
}

/** One contribution packed as ContributionLedger expects it (CONTRIBUTION_BYTES = 40). */
function packContribution(c) {
  return ethers.solidityPacked(["address", "uint16", "uint16", "uint16", "uint16", "uint96"],
    [c.participant, c.quality, c.timeliness, c.honesty, c.fitness, c.reward]);
}

function packContributions(list) {
  return list.length ? ethers.concat(list.map(packContribution)) : "0x";
}

/** keccak256 of the update hashes in contribution order (recordRound's `updatesHash`). */
function updatesHash(list) {
  return ethers.keccak256(list.length ? ethers.concat(list.map((c) => c.updateHash)) : "0x");
}

const AUDIT_HEAD = ethers.keccak256(ethers.toUtf8Bytes("audit head"));

function contribution(participant, reward, scores = {}) {
  return {
    participant,
    updateHash: ethers.keccak256(ethers.toUtf8Bytes(`update:${participant}`)),
    quality: scores.quality ?? 8000,
    timeliness: scores.timeliness ?? 9000,
    honesty: scores.honesty ?? 9500,
    fitness: scores.fitness ?? 8700,
    reward,
  };
}

/** Records a round with the given (signer, reward) list; returns the tree for claims. */
async function recordRound(sys, roundId, rewards, modelHash = ethers.keccak256(ethers.toUtf8Bytes(`model:${roundId}`))) {
  const entries = rewards.map(([s, amount]) => [s.address ?? s, amount]);
  const tree = rewardsTree(roundId, entries);
  const total = entries.reduce((a, [, v]) => a + v, 0n);
  const list = entries.map(([a, v]) => contribution(a, v));
  const tx = await sys.ContributionLedger.connect(sys.aggregator).recordRound(
    roundId, modelHash, tree.root, total, AUDIT_HEAD, roundId, updatesHash(list), packContributions(list));
  return { tree, total, tx, modelHash };
}

/** Records a round with the next free id (latest + 1). */
async function recordNextRound(sys, rewards) {
  const roundId = (await sys.ContributionLedger.latestRoundId()) + 1n;
  return { roundId, ...(await recordRound(sys, roundId, rewards)) };
}

/** The timelock as a signer (what a passed proposal executes as), funded for gas. */
async function asTimelock(sys) {
  const tl = await ethers.getImpersonatedSigner(await sys.Timelock.getAddress());
  await sys.deployer.sendTransaction({ to: tl.address, value: WAD });
  return tl;
}

function proofFor(tree, account) {
  for (const [i, v] of tree.entries()) if (v[1].toLowerCase() === account.toLowerCase()) return { proof: tree.getProof(i), amount: v[2] };
  throw new Error(`no leaf for ${account}`);
}

async function enroll(sys, signer, amount = 100n * WAD) {
  await sys.RewardToken.connect(signer).approve(await sys.ParticipantRegistry.getAddress(), amount);
  return sys.ParticipantRegistry.connect(signer).enroll(amount);
}

/** Runs a proposal through the governor and timelock; returns the proposal id. */
async function passProposal(sys, voters, targets, calldatas, description) {
  const { FLGovernor: gov } = sys;
  const { mine, time } = require("@nomicfoundation/hardhat-network-helpers");
  const values = targets.map(() => 0n);
  await gov.connect(voters[0]).propose(targets, values, calldatas, description);
  const descriptionHash = ethers.id(description);
  const id = await gov.hashProposal(targets, values, calldatas, descriptionHash);
  await mine(Number(await gov.votingDelay()) + 1);
  for (const v of voters) await gov.connect(v).castVote(id, 1);
  await mine(Number(await gov.votingPeriod()) + 1);
  await gov.queue(targets, values, calldatas, descriptionHash);
  await time.increase(Number(sys.result.config.timelockDelay) + 1);
  await gov.execute(targets, values, calldatas, descriptionHash);
  return id;
}

module.exports = { WAD, AUDIT_HEAD, deploySystem, deployedSystem, guardedSystem, defaultsSystem, rewardsTree, contribution, packContribution,
  packContributions, updatesHash, recordRound, recordNextRound, asTimelock, proofFor, enroll, passProposal };
