const hre = require("hardhat");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const { deployAll } = require("../scripts/deployLib");

const { ethers } = hre;
const WAD = 10n ** 18n;

/** The deployed system as the deploy script wires it, plus named dev signers. */
async function deployedSystem() {
  const signers = await ethers.getSigners();
  const result = await deployAll(hre);
  const [deployer, aggregator, modelSigner, ...orgs] = signers;
  return { ...result.contracts, result, deployer, aggregator, modelSigner, orgs };
}

/** Rewards tree exactly as the contracts verify it (OpenZeppelin's standard double-hashed leaves). */
function rewardsTree(roundId, entries) {
  return StandardMerkleTree.of(entries.map(([account, amount]) => [roundId, account, amount]), ["uint256", "address", "uint256"]);
}

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
  const tx = await sys.ContributionLedger.connect(sys.aggregator).recordRound(
    roundId, modelHash, tree.root, total, entries.map(([a, v]) => contribution(a, v)));
  return { tree, total, tx, modelHash };
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

module.exports = { WAD, deployedSystem, rewardsTree, contribution, recordRound, proofFor, enroll, passProposal };
