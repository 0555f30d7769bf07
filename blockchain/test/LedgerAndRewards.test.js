const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, guardedSystem, recordRound, rewardsTree, contribution, packContributions, updatesHash,
  proofFor, AUDIT_HEAD, WAD } = require("./fixtures");

const MODEL = ethers.keccak256(ethers.toUtf8Bytes("model"));

/** recordRound with explicit arguments (the aggregator's signer unless `from` is given). */
function record(sys, roundId, list, { total, root = ethers.id("root"), model = MODEL, from = sys.aggregator, packed } = {}) {
  const sum = total ?? list.reduce((a, c) => a + c.reward, 0n);
  return sys.ContributionLedger.connect(from).recordRound(roundId, model, root, sum, AUDIT_HEAD, 3, updatesHash(list),
    packed ?? packContributions(list));
}

describe("ContributionLedger and RewardDistributor", function () {
  it("records a round once, anchors the audit head, and decodes the packed contributions", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b] = sys.orgs;
    const { tx, tree, total, modelHash } = await recordRound(sys, 1, [[a, 30n * WAD], [b, 20n * WAD]]);
    const list = [contribution(a.address, 30n * WAD), contribution(b.address, 20n * WAD)];
    const block = await ethers.provider.getBlock((await (await tx).wait()).blockNumber);
    await expect(tx).to.emit(sys.ContributionLedger, "RoundRecorded")
      .withArgs(1, modelHash, tree.root, total, block.timestamp, AUDIT_HEAD, 1, updatesHash(list));
    // The contributions are in the transaction's input, 40 bytes each.
    const input = sys.ContributionLedger.interface.decodeFunctionData("recordRound", (await ethers.provider.getTransaction((await tx).hash)).data);
    expect(input.contributions).to.equal(packContributions(list));
    expect(ethers.dataLength(input.contributions)).to.equal(2 * Number(await sys.ContributionLedger.CONTRIBUTION_BYTES()));
    expect(await sys.ContributionLedger.isRecorded(1)).to.equal(true);
    expect(await sys.ContributionLedger.isRecorded(2)).to.equal(false);
    expect(await sys.ContributionLedger.modelHashOf(1)).to.equal(modelHash);
    const r = await sys.ContributionLedger.roundOf(1);
    expect(r.rewardsRoot).to.equal(tree.root);
    expect(r.totalReward).to.equal(total);
    expect(r.claimableAt).to.equal(BigInt(block.timestamp)); // dev chain: dispute window 0
    expect(await sys.ContributionLedger.latestRoundId()).to.equal(1n);
    expect(await sys.ContributionLedger.roundsRecorded()).to.equal(1n);
    const rewards = await sys.RewardDistributor.roundRewards(1);
    expect(rewards.root).to.equal(tree.root);
    expect(rewards.total).to.equal(total);
  });

  it("records rounds only in increasing order, with bounded gaps (issue 13.2: no reuse of an id)", async function () {
    const sys = await loadFixture(deployedSystem);
    const L = sys.ContributionLedger;
    const list = [contribution(sys.orgs[0].address, 5n)];
    await expect(record(sys, 0, list)).to.be.revertedWithCustomError(L, "RoundOutOfOrder").withArgs(0, 0);
    await record(sys, 5, list); // a gap (failed rounds 1..4) is fine
    await expect(record(sys, 5, list)).to.be.revertedWithCustomError(L, "RoundOutOfOrder").withArgs(5, 5);
    await expect(record(sys, 3, list)).to.be.revertedWithCustomError(L, "RoundOutOfOrder").withArgs(3, 5);
    const gap = await L.maxRoundGap();
    expect(gap).to.equal(await L.DEFAULT_MAX_ROUND_GAP());
    await expect(record(sys, 5n + gap + 1n, list)).to.be.revertedWithCustomError(L, "RoundGapTooLarge").withArgs(5n + gap + 1n, 5, gap);
    await record(sys, 5n + gap, list);
    expect(await L.latestRoundId()).to.equal(5n + gap);
    expect(await L.roundsRecorded()).to.equal(2n);
  });

  it("refuses bad rounds with a specific error", async function () {
    const sys = await loadFixture(deployedSystem);
    const L = sys.ContributionLedger;
    const [a] = sys.orgs;
    const ok = [contribution(a.address, 5n)];
    await expect(record(sys, 1, ok, { from: a })).to.be.revertedWithCustomError(L, "AccessControlUnauthorizedAccount");
    await expect(record(sys, 1, ok, { model: ethers.ZeroHash })).to.be.revertedWithCustomError(L, "InvalidModelHash");
    await expect(record(sys, 1, [], { packed: "0x" })).to.be.revertedWithCustomError(L, "MalformedContributions").withArgs(0);
    await expect(record(sys, 1, ok, { packed: packContributions(ok) + "00" })).to.be.revertedWithCustomError(L, "MalformedContributions").withArgs(41);
    for (const field of ["quality", "timeliness", "honesty", "fitness"]) {
      await expect(record(sys, 1, [contribution(a.address, 1n), contribution(a.address, 5n, { [field]: 10001 })]))
        .to.be.revertedWithCustomError(L, "ScoreOutOfRange").withArgs(1);
    }
    await expect(record(sys, 1, [contribution(a.address, 5n, { quality: 10000, timeliness: 10000, honesty: 10000, fitness: 10000 })]))
      .to.emit(L, "RoundRecorded");
    await expect(record(sys, 2, [contribution(ethers.ZeroAddress, 5n)])).to.be.revertedWithCustomError(L, "ZeroParticipant").withArgs(0);
    await expect(record(sys, 2, ok, { total: 6n })).to.be.revertedWithCustomError(L, "TotalRewardMismatch").withArgs(6n, 5n);
    await expect(record(sys, 2, ok, { root: ethers.ZeroHash })).to.be.revertedWithCustomError(L, "ZeroRoot").withArgs(2);
    const tooMany = Array(2049).fill(contribution(a.address, 0n));
    await expect(record(sys, 2, tooMany)).to.be.revertedWithCustomError(L, "TooManyContributions").withArgs(2049, 2048);
    const budget = 10_000n * WAD;
    await expect(record(sys, 2, [contribution(a.address, budget + 1n)]))
      .to.be.revertedWithCustomError(L, "BudgetExceeded").withArgs(2, budget + 1n, budget);
  });

  it("anchors the audit head between rounds, as the aggregator only", async function () {
    const sys = await loadFixture(deployedSystem);
    const L = sys.ContributionLedger;
    const head = ethers.id("audit entry 42");
    await expect(L.connect(sys.orgs[0]).anchorAudit(head, 42)).to.be.revertedWithCustomError(L, "AccessControlUnauthorizedAccount");
    await expect(L.connect(sys.aggregator).anchorAudit(ethers.ZeroHash, 42)).to.be.revertedWithCustomError(L, "InvalidAuditAnchor");
    await expect(L.connect(sys.aggregator).anchorAudit(head, 0)).to.be.revertedWithCustomError(L, "InvalidAuditAnchor");
    await expect(L.connect(sys.aggregator).anchorAudit(head, 42)).to.emit(L, "AuditAnchored").withArgs(head, 42);
    expect(await L.latestRoundId()).to.equal(0n);
  });

  it("records a round with no rewards: nothing to claim", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a] = sys.orgs;
    await expect(record(sys, 7, [contribution(a.address, 0n)], { root: ethers.ZeroHash })).to.emit(sys.ContributionLedger, "RoundRecorded");
    expect(await sys.ContributionLedger.latestRoundId()).to.equal(7n);
    await expect(sys.RewardDistributor.claim(7, a.address, 0n, []))
      .to.be.revertedWithCustomError(sys.ContributionLedger, "NoRewards").withArgs(7);
  });

  it("mints a claim once, to the account, whoever relays it", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b, relayer] = sys.orgs;
    const { tree } = await recordRound(sys, 3, [[a, 30n * WAD], [b, 20n * WAD]]);
    const D = sys.RewardDistributor;
    const { proof, amount } = proofFor(tree, a.address);
    const before = await sys.RewardToken.balanceOf(a.address);
    await expect(D.connect(relayer).claim(3, a.address, amount, proof)).to.emit(D, "Claimed").withArgs(3, a.address, amount);
    expect(await sys.RewardToken.balanceOf(a.address)).to.equal(before + amount);
    expect(await D.claimed(3, a.address)).to.equal(true);
    expect(await D.claimed(3, b.address)).to.equal(false);
    expect(await D.claimed(259, a.address)).to.equal(false); // same bit in the next bitmap word
    await expect(D.claim(3, a.address, amount, proof)).to.be.revertedWithCustomError(D, "AlreadyClaimed").withArgs(3, a.address);
    expect((await D.roundRewards(3)).claimedAmount).to.equal(amount);
  });

  it("claims several rounds with one mint, with the same checks", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b] = sys.orgs;
    const D = sys.RewardDistributor;
    const t1 = (await recordRound(sys, 1, [[a, 3n * WAD], [b, WAD]])).tree;
    const t2 = (await recordRound(sys, 2, [[a, 4n * WAD], [b, WAD]])).tree;
    const p1 = proofFor(t1, a.address);
    const p2 = proofFor(t2, a.address);
    await expect(D.claimMany([], a.address, [], [])).to.be.revertedWithCustomError(D, "BadClaimBatch").withArgs(0);
    await expect(D.claimMany([1, 2], a.address, [p1.amount], [p1.proof, p2.proof])).to.be.revertedWithCustomError(D, "BadClaimBatch").withArgs(2);
    await expect(D.claimMany([1, 2], a.address, [p1.amount, p2.amount], [p1.proof])).to.be.revertedWithCustomError(D, "BadClaimBatch").withArgs(2);
    await expect(D.claimMany(Array(65).fill(1), a.address, Array(65).fill(1n), Array(65).fill([]))).to.be.revertedWithCustomError(D, "BadClaimBatch").withArgs(65);
    await expect(D.claimMany([1, 1], a.address, [p1.amount, p1.amount], [p1.proof, p1.proof])).to.be.revertedWithCustomError(D, "AlreadyClaimed");
    const before = await sys.RewardToken.balanceOf(a.address);
    await expect(D.claimMany([1, 2], a.address, [p1.amount, p2.amount], [p1.proof, p2.proof]))
      .to.emit(D, "Claimed").withArgs(1, a.address, p1.amount).and.to.emit(D, "Claimed").withArgs(2, a.address, p2.amount);
    expect(await sys.RewardToken.balanceOf(a.address)).to.equal(before + 7n * WAD);
    await expect(D.claim(2, a.address, p2.amount, p2.proof)).to.be.revertedWithCustomError(D, "AlreadyClaimed");
  });

  it("rejects wrong amounts, accounts, rounds and proofs", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b, c] = sys.orgs;
    const { tree } = await recordRound(sys, 4, [[a, 30n * WAD], [b, 20n * WAD]]);
    const D = sys.RewardDistributor;
    const { proof, amount } = proofFor(tree, a.address);
    await expect(D.claim(4, a.address, amount + 1n, proof)).to.be.revertedWithCustomError(D, "InvalidProof");
    await expect(D.claim(4, c.address, amount, proof)).to.be.revertedWithCustomError(D, "InvalidProof");
    await expect(D.claim(5, a.address, amount, proof)).to.be.revertedWithCustomError(sys.ContributionLedger, "NoRewards");
    await expect(D.claim(4, a.address, amount, [])).to.be.revertedWithCustomError(D, "InvalidProof");
    // Only the distributor counts claims against a round.
    await expect(sys.ContributionLedger.connect(a).consumeRewards(4, amount))
      .to.be.revertedWithCustomError(sys.ContributionLedger, "NotDistributor").withArgs(a.address);
  });

  it("never mints more than a round's declared total, even under a bad root", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a] = sys.orgs;
    // The listed contributions sum to 10, but the posted root pays a 1000: defence in depth caps minting.
    const tree = rewardsTree(6, [[a.address, 1000n]]);
    await record(sys, 6, [contribution(a.address, 10n)], { root: tree.root });
    await expect(sys.RewardDistributor.claim(6, a.address, 1000n, tree.getProof(0)))
      .to.be.revertedWithCustomError(sys.ContributionLedger, "RoundTotalExceeded").withArgs(6, 1000n, 10n);
  });

  it("refuses zero addresses at construction", async function () {
    const sys = await loadFixture(deployedSystem);
    const P = await sys.ProtocolParameters.getAddress();
    const L = await ethers.getContractFactory("ContributionLedger");
    const d = sys.deployer.address;
    for (const args of [[ethers.ZeroAddress, d, d], [P, ethers.ZeroAddress, d], [P, d, ethers.ZeroAddress]]) {
      await expect(L.deploy(...args)).to.be.revertedWithCustomError(L, "ZeroAddress");
    }
    const D = await ethers.getContractFactory("RewardDistributor");
    const T = await sys.RewardToken.getAddress();
    await expect(D.deploy(ethers.ZeroAddress, d)).to.be.revertedWithCustomError(D, "ZeroAddress");
    await expect(D.deploy(T, ethers.ZeroAddress)).to.be.revertedWithCustomError(D, "ZeroAddress");
  });
});
