// Issue 21, on-chain items: each attack of the adversarial review, performed with the default deployment's
// parameters, and shown stopped (the tests fail on the contracts before the fix).
const { expect } = require("chai");
const hre = require("hardhat");
const { ethers } = hre;
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { anyValue } = require("@nomicfoundation/hardhat-chai-matchers/withArgs");
const { deployAll } = require("../scripts/deployLib");
const { defaultsSystem, recordRound, recordNextRound, proofFor, asTimelock, WAD } = require("./fixtures");

const REASON = ethers.id("stolen-key");
const DAY = 24 * 3600;
const P = { RoundRewardBudget: 26 };

describe("Issue 21.1: a stolen aggregator key, default deployment", function () {
  it("the issue's attack: the guardian cancels every root and revokes the key inside the window; nothing is minted, no vote gained", async function () {
    const sys = await loadFixture(defaultsSystem);
    const L = sys.ContributionLedger;
    const gov = sys.FLGovernor;
    const thief = sys.aggregator;
    const { guardian } = sys;
    const tl = await sys.Timelock.getAddress();
    expect(guardian.address).to.not.equal(tl);
    expect(guardian.address).to.not.equal(thief.address);
    const genesis = await sys.RewardToken.totalSupply();

    // Day 0: full-budget roots paying the key itself, as fast as it can: the rolling cap stops it at 100,000.
    const roots = [];
    for (let i = 0; i < 12; i++) {
      try {
        roots.push(await recordNextRound(sys, [[thief, 10_000n * WAD]]));
      } catch (e) {
        expect(e.message).to.contain("EmissionCapExceeded");
        break;
      }
    }
    expect(roots.length).to.equal(10);
    const claim = (r) => {
      const { proof, amount } = proofFor(r.tree, thief.address);
      return sys.RewardDistributor.claim(r.roundId, thief.address, amount, proof);
    };
    await expect(claim(roots[0])).to.be.revertedWithCustomError(L, "DisputeWindowOpen");

    // An hour later the guardian, with no vote and no timelock, cancels every root and takes the key's roles.
    await time.increase(3600);
    const cancel = L.connect(guardian).cancelRewardsBatch(roots.map((r) => r.roundId), REASON);
    for (const r of roots) await expect(cancel).to.emit(L, "RewardsCancelled").withArgs(r.roundId, guardian.address, REASON);
    await expect(L.connect(guardian).revokeAggregator(thief.address, REASON))
      .to.emit(L, "AggregatorRevoked").withArgs(thief.address, guardian.address, REASON);
    await expect(L.connect(guardian).revokeAggregator(thief.address, REASON)).to.be.revertedWithCustomError(L, "NotAggregator");

    // The key records nothing more, and nothing it recorded ever pays.
    await expect(recordNextRound(sys, [[thief, WAD]])).to.be.revertedWithCustomError(L, "AccessControlUnauthorizedAccount");
    await time.increase(13 * DAY); // the horizon
    for (const r of roots) await expect(claim(r)).to.be.revertedWithCustomError(L, "RewardsAreCancelled");
    expect(await sys.RewardToken.totalSupply()).to.equal(genesis);
    // So the key never held a vote: it cannot propose (let alone outvote the 17 organizations).
    expect(await sys.RewardToken.getVotes(thief.address)).to.equal(0n);
    const call = sys.RewardToken.interface.encodeFunctionData("grantRole", [await sys.RewardToken.MINTER_ROLE(), thief.address]);
    await expect(gov.connect(thief).propose([await sys.RewardToken.getAddress()], [0n], [call], "minter"))
      .to.be.revertedWithCustomError(gov, "GovernorInsufficientProposerVotes");

    // Governance grants a new key; the platform records on.
    const timelock = await asTimelock(sys);
    const fresh = sys.orgs[10];
    await L.connect(timelock).grantRole(await L.AGGREGATOR_ROLE(), fresh.address);
    await recordRound({ ...sys, aggregator: fresh }, roots[9].roundId + 1n, [[sys.orgs[0], WAD]]);
  });

  it("bounds every window of one emission period by the cap: no twice the cap around a period boundary", async function () {
    const sys = await loadFixture(defaultsSystem);
    const L = sys.ContributionLedger;
    const thief = sys.aggregator;
    const timelock = await asTimelock(sys);
    // One root may take the whole cap (the budget raised to it), to show the boundary alone.
    await sys.ProtocolParameters.connect(timelock).setParameter(P.RoundRewardBudget, 100_000n * WAD);
    const period = 86_400n;
    const boundary = (BigInt(await time.latest()) / period + 1n) * period;
    await time.setNextBlockTimestamp(boundary - 60n);
    await recordNextRound(sys, [[thief, 100_000n * WAD]]);
    // Two minutes later, in the next calendar period: refused (the old ledger accepted a second cap here).
    await time.setNextBlockTimestamp(boundary + 60n);
    await expect(recordNextRound(sys, [[thief, WAD]])).to.be.revertedWithCustomError(L, "EmissionCapExceeded")
      .withArgs(anyValue, WAD, 100_000n * WAD, 100_000n * WAD, boundary + period);
    await time.setNextBlockTimestamp(boundary + period - 61n);
    await expect(recordNextRound(sys, [[thief, WAD]])).to.be.revertedWithCustomError(L, "EmissionCapExceeded");
    // Free again once the first root is more than a period old.
    await time.setNextBlockTimestamp(boundary + period);
    await recordNextRound(sys, [[thief, WAD]]);
    expect(await L.emittedInWindow()).to.equal(WAD);
  });

  it("cancels in bounded batches, only as a guardian or governance", async function () {
    const sys = await loadFixture(defaultsSystem);
    const L = sys.ContributionLedger;
    const { roundId } = await recordNextRound(sys, [[sys.orgs[0], WAD]]);
    await expect(L.connect(sys.aggregator).cancelRewardsBatch([roundId], REASON)).to.be.revertedWithCustomError(L, "NotGuardian");
    await expect(L.connect(sys.aggregator).revokeAggregator(sys.aggregator.address, REASON)).to.be.revertedWithCustomError(L, "NotGuardian");
    await expect(L.connect(sys.guardian).cancelRewardsBatch([], REASON)).to.be.revertedWithCustomError(L, "BadCancelBatch").withArgs(0);
    await expect(L.connect(sys.guardian).cancelRewardsBatch(Array(257).fill(roundId), REASON))
      .to.be.revertedWithCustomError(L, "BadCancelBatch").withArgs(257);
    // One bad id reverts the whole batch (nothing half-done).
    await expect(L.connect(sys.guardian).cancelRewardsBatch([roundId, roundId], REASON)).to.be.revertedWithCustomError(L, "RewardsAreCancelled");
    expect((await L.roundOf(roundId)).cancelled).to.equal(false);
    const timelock = await asTimelock(sys);
    await expect(L.connect(timelock).cancelRewardsBatch([roundId], REASON)).to.emit(L, "RewardsCancelled");
  });

  it("deploys with a guardian of its own: never the aggregator", async function () {
    const [, aggregator] = await ethers.getSigners();
    await expect(deployAll(hre, { guardian: aggregator.address })).to.be.rejectedWith("must not be the aggregator");
  });
});

describe("Issue 21.3: a round-id jump", function () {
  it("refuses the issue's jump and any step above the bounded gap; ids stay 32-bit", async function () {
    const sys = await loadFixture(defaultsSystem);
    const L = sys.ContributionLedger;
    await recordNextRound(sys, [[sys.orgs[0], WAD]]);
    const latest = await L.latestRoundId();
    const max = await L.MAX_ROUND_ID();
    expect(max).to.equal(2n ** 31n - 1n);
    await expect(recordRound(sys, latest + 2n ** 31n, [[sys.orgs[1], 0n]])).to.be.revertedWithCustomError(L, "RoundIdOutOfRange").withArgs(latest + 2n ** 31n, max);
    await expect(recordRound(sys, latest + 1025n, [[sys.orgs[1], 0n]])).to.be.revertedWithCustomError(L, "RoundGapTooLarge").withArgs(latest + 1025n, latest, 1024);
    // Governance may widen the gap, within a bound that keeps the id space out of a thief's reach.
    await expect(L.connect(sys.guardian).setMaxRoundGap(10)).to.be.revertedWithCustomError(L, "AccessControlUnauthorizedAccount");
    const timelock = await asTimelock(sys);
    await expect(L.connect(timelock).setMaxRoundGap(0)).to.be.revertedWithCustomError(L, "InvalidRoundGap").withArgs(0);
    await expect(L.connect(timelock).setMaxRoundGap(65_536)).to.be.revertedWithCustomError(L, "InvalidRoundGap").withArgs(65_536);
    await expect(L.connect(timelock).setMaxRoundGap(65_535)).to.emit(L, "MaxRoundGapChanged").withArgs(1024, 65_535);
    await recordRound(sys, latest + 65_535n, [[sys.orgs[0], WAD]]);
    expect(await L.latestRoundId()).to.equal(latest + 65_535n);
    expect(await L.roundsRecorded()).to.equal(2n);
  });
});
