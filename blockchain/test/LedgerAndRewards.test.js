const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, recordRound, rewardsTree, contribution, proofFor, WAD } = require("./fixtures");

const MODEL = ethers.keccak256(ethers.toUtf8Bytes("model"));

describe("ContributionLedger and RewardDistributor", function () {
  it("records a round once, with one event per contribution, and posts the rewards root", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b] = sys.orgs;
    const { tx, tree, total, modelHash } = await recordRound(sys, 1, [[a, 30n * WAD], [b, 20n * WAD]]);
    await expect(tx).to.emit(sys.ContributionLedger, "RoundRecorded").withArgs(1, modelHash, tree.root, 2, total);
    await expect(tx).to.emit(sys.ContributionLedger, "ContributionRecorded")
      .withArgs(1, a.address, ethers.keccak256(ethers.toUtf8Bytes(`update:${a.address}`)), 8000, 9000, 9500, 8700, 30n * WAD);
    await expect(tx).to.emit(sys.RewardDistributor, "RewardsRootPosted").withArgs(1, tree.root, total);
    const receipt = await (await tx).wait();
    const events = receipt.logs.filter((l) => l.address === sys.ContributionLedger.target)
      .map((l) => sys.ContributionLedger.interface.parseLog(l)).filter((e) => e.name === "ContributionRecorded");
    expect(events.length).to.equal(2);
    expect(await sys.ContributionLedger.isRecorded(1)).to.equal(true);
    expect(await sys.ContributionLedger.modelHashOf(1)).to.equal(modelHash);
    const r = await sys.ContributionLedger.roundOf(1);
    expect(r.participantCount).to.equal(2n);
    expect(r.totalReward).to.equal(total);
    expect(await sys.ContributionLedger.latestRoundId()).to.equal(1n);
    await expect(recordRound(sys, 1, [[a, 1n]])).to.be.revertedWithCustomError(sys.ContributionLedger, "RoundAlreadyRecorded").withArgs(1);
  });

  it("refuses bad rounds with a specific error", async function () {
    const sys = await loadFixture(deployedSystem);
    const L = sys.ContributionLedger.connect(sys.aggregator);
    const [a] = sys.orgs;
    const ok = [contribution(a.address, 5n)];
    await expect(sys.ContributionLedger.connect(a).recordRound(1, MODEL, ethers.ZeroHash, 5n, ok))
      .to.be.revertedWithCustomError(L, "AccessControlUnauthorizedAccount");
    await expect(L.recordRound(0, MODEL, ethers.ZeroHash, 5n, ok)).to.be.revertedWithCustomError(L, "InvalidRoundId");
    await expect(L.recordRound(1, ethers.ZeroHash, ethers.ZeroHash, 5n, ok)).to.be.revertedWithCustomError(L, "InvalidModelHash");
    await expect(L.recordRound(1, MODEL, ethers.ZeroHash, 0n, [])).to.be.revertedWithCustomError(L, "NoContributions");
    await expect(L.recordRound(1, MODEL, ethers.ZeroHash, 5n, [contribution(a.address, 5n, { honesty: 10001 })]))
      .to.be.revertedWithCustomError(L, "ScoreOutOfRange").withArgs(0);
    await expect(L.recordRound(1, MODEL, ethers.ZeroHash, 5n, [contribution(ethers.ZeroAddress, 5n)]))
      .to.be.revertedWithCustomError(L, "ZeroParticipant").withArgs(0);
    await expect(L.recordRound(1, MODEL, ethers.ZeroHash, 6n, ok)).to.be.revertedWithCustomError(L, "TotalRewardMismatch").withArgs(6n, 5n);
    const tooMany = Array(2049).fill(contribution(a.address, 0n));
    await expect(L.recordRound(1, MODEL, ethers.ZeroHash, 0n, tooMany)).to.be.revertedWithCustomError(L, "TooManyContributions");
    const budget = 10_000n * WAD;
    await expect(L.recordRound(1, MODEL, ethers.ZeroHash, budget + 1n, [contribution(a.address, budget + 1n)]))
      .to.be.revertedWithCustomError(sys.RewardDistributor, "BudgetExceeded");
  });

  it("records a round with no rewards without posting a root", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a] = sys.orgs;
    const tx = sys.ContributionLedger.connect(sys.aggregator).recordRound(7, MODEL, ethers.ZeroHash, 0n, [contribution(a.address, 0n)]);
    await expect(tx).to.not.emit(sys.RewardDistributor, "RewardsRootPosted");
    await expect(sys.RewardDistributor.claim(7, a.address, 0n, [])).to.be.revertedWithCustomError(sys.RewardDistributor, "UnknownRound");
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
    await expect(D.claim(3, a.address, amount, proof)).to.be.revertedWithCustomError(D, "AlreadyClaimed").withArgs(3, a.address);
    expect((await D.roundRewards(3)).claimed).to.equal(amount);
  });

  it("rejects wrong amounts, accounts, rounds and proofs", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b, c] = sys.orgs;
    const { tree } = await recordRound(sys, 4, [[a, 30n * WAD], [b, 20n * WAD]]);
    const D = sys.RewardDistributor;
    const { proof, amount } = proofFor(tree, a.address);
    await expect(D.claim(4, a.address, amount + 1n, proof)).to.be.revertedWithCustomError(D, "InvalidProof");
    await expect(D.claim(4, c.address, amount, proof)).to.be.revertedWithCustomError(D, "InvalidProof");
    await expect(D.claim(5, a.address, amount, proof)).to.be.revertedWithCustomError(D, "UnknownRound");
    await expect(D.claim(4, a.address, amount, [])).to.be.revertedWithCustomError(D, "InvalidProof");
    await expect(D.connect(a).postRoot(9, tree.root, 1n)).to.be.revertedWithCustomError(D, "AccessControlUnauthorizedAccount");
  });

  it("never mints more than a round's declared total, even under a bad root", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a] = sys.orgs;
    // The listed contributions sum to 10, but the posted root pays a 1000: defence in depth caps minting.
    const tree = rewardsTree(6, [[a.address, 1000n]]);
    await sys.ContributionLedger.connect(sys.aggregator).recordRound(6, MODEL, tree.root, 10n, [contribution(a.address, 10n)]);
    await expect(sys.RewardDistributor.claim(6, a.address, 1000n, tree.getProof(0)))
      .to.be.revertedWithCustomError(sys.RewardDistributor, "RoundTotalExceeded");
  });

  it("refuses zero addresses at construction", async function () {
    const sys = await loadFixture(deployedSystem);
    const L = await ethers.getContractFactory("ContributionLedger");
    await expect(L.deploy(ethers.ZeroAddress, sys.deployer.address)).to.be.revertedWithCustomError(L, "ZeroAddress");
    const D = await ethers.getContractFactory("RewardDistributor");
    await expect(D.deploy(await sys.RewardToken.getAddress(), ethers.ZeroAddress, sys.deployer.address)).to.be.revertedWithCustomError(D, "ZeroAddress");
    const R = await ethers.getContractFactory("ParticipantRegistry");
    await expect(R.deploy(await sys.RewardToken.getAddress(), await sys.ProtocolParameters.getAddress(), sys.deployer.address, ethers.ZeroAddress))
      .to.be.revertedWithCustomError(R, "ZeroAddress");
  });
});
