// Issue 13, items 1 and 2: each attack of the adversarial review, performed, and shown refused.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, guardedSystem, enroll, recordRound, recordNextRound, proofFor, passProposal, asTimelock,
  contribution, packContributions, updatesHash, AUDIT_HEAD, WAD } = require("./fixtures");

const Status = { None: 0n, Active: 1n, Suspended: 2n, Slashed: 3n, Exited: 4n };
const REASON = ethers.id("fedledger:round:1:low_honesty");
const UNBONDING = 3 * 24 * 3600;
const P = { RoundRewardBudget: 26, EmissionCapPerPeriod: 44, EmissionPeriod: 45, DisputeWindow: 46 };

describe("Issue 13.1: escaping a slash", function () {
  it("an organization that submitted and requested exit before the round is posted is slashed and cannot withdraw before it", async function () {
    const sys = await loadFixture(deployedSystem);
    const [attacker, honest] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, attacker);
    await enroll(sys, honest);
    await recordNextRound(sys, [[honest, WAD]]); // round 1 posted; round 2 is in flight with the poisoned update
    // The attacker submitted to round 2, then asks to leave before round 2 is posted.
    await expect(reg.connect(attacker).requestExit()).to.emit(reg, "ExitRequested").withArgs(attacker.address, anyTime(), 2);
    await time.increase(UNBONDING + 1);
    // Unbonding is over, but round 2 is not recorded yet: the stake stays (timing does not matter).
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "RoundsPending").withArgs(attacker.address, 2, 1);
    await time.increase(30 * 24 * 3600);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "RoundsPending");
    // Posting round 2 slashes it although it is no longer Active (posting slashes whoever still has stake):
    // 10 % at once, the rest after the slash window (issue 21.2) ...
    await expect(reg.connect(sys.aggregator).slash(attacker.address, 100n * WAD, REASON))
      .to.emit(reg, "Slashed").withArgs(attacker.address, 10n * WAD, REASON, 90n * WAD)
      .and.to.emit(reg, "SlashQueued").withArgs(attacker.address, 90n * WAD, REASON, anyTime(), 90n * WAD);
    expect((await reg.participantOf(attacker.address)).status).to.equal(Status.Exited);
    // ... before the round record, which is what unlocks withdrawals; the pending part holds the rest.
    await recordNextRound(sys, [[honest, WAD]]);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "SlashPending");
    await time.increase(24 * 3600);
    await reg.executeSlash(attacker.address);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "NothingToWithdraw");
    expect(await reg.totalStaked()).to.equal(100n * WAD);
  });

  it("slashes a participant in every status that still holds stake", async function () {
    const sys = await loadFixture(deployedSystem);
    const [active, suspended, slashed, exiting] = sys.orgs;
    const reg = sys.ParticipantRegistry.connect(sys.aggregator);
    for (const o of [active, suspended, slashed, exiting]) await enroll(sys, o);
    await reg.suspend(suspended.address);
    await reg.slash(slashed.address, WAD, REASON);
    await sys.ParticipantRegistry.connect(exiting).requestExit();
    await time.increase(24 * 3600); // past the prompt-slash cooldown of `slashed` (issue 21.2)
    const expected = { [active.address]: Status.Slashed, [suspended.address]: Status.Slashed,
      [slashed.address]: Status.Slashed, [exiting.address]: Status.Exited };
    for (const o of [active, suspended, slashed, exiting]) {
      await expect(reg.slash(o.address, WAD, REASON)).to.emit(reg, "Slashed");
      expect((await reg.participantOf(o.address)).status).to.equal(expected[o.address]);
    }
    expect(await sys.ParticipantRegistry.activeCount()).to.equal(0n);
    expect((await sys.ParticipantRegistry.participantOf(slashed.address)).slashCount).to.equal(2n);
  });

  it("keeps a slashed address's record when it enrolls again", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, org);
    await reg.connect(sys.aggregator).recordByzantine([org.address, org.address]);
    await reg.connect(sys.aggregator).slash(org.address, 10n * WAD, REASON);
    await reg.connect(org).requestExit();
    await time.increase(UNBONDING);
    await recordNextRound(sys, [[sys.orgs[5], WAD]]);
    await reg.connect(org).withdraw();
    await expect(enroll(sys, org)).to.emit(reg, "StatusChanged").withArgs(org.address, Status.Exited, Status.Active);
    const p = await reg.participantOf(org.address);
    expect(p.byzantineCount).to.equal(2n);
    expect(p.slashCount).to.equal(1n);
    expect(p.stake).to.equal(100n * WAD);
    expect(p.unlockRound).to.equal(0n);
  });

  it("lets governance release an exit when the platform stopped recording rounds", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org, other] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, org);
    await reg.connect(org).requestExit();
    await time.increase(UNBONDING);
    await expect(reg.connect(org).withdraw()).to.be.revertedWithCustomError(reg, "RoundsPending");
    await expect(reg.connect(sys.aggregator).releaseExit(org.address)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    const tl = await asTimelock(sys);
    await expect(reg.connect(tl).releaseExit(other.address)).to.be.revertedWithCustomError(reg, "InvalidStatus");
    await expect(reg.connect(tl).releaseExit(org.address)).to.emit(reg, "ExitReleased").withArgs(org.address);
    await expect(reg.connect(org).withdraw()).to.emit(reg, "Withdrawn").withArgs(org.address, 100n * WAD);
  });
});

describe("Issue 13.2: bounding a stolen aggregator key", function () {
  it("caps what the key can record per emission window, and frees it as the window rolls on", async function () {
    const sys = await loadFixture(deployedSystem);
    const thief = sys.aggregator.address;
    const L = sys.ContributionLedger;
    // The review's attack: record-and-claim pairs paying the key itself, each up to the round budget (10k).
    let minted = 0n;
    let refused;
    for (let i = 0; i < 18; i++) {
      const roundId = (await L.latestRoundId()) + 1n;
      try {
        const { tree } = await recordRound(sys, roundId, [[thief, 10_000n * WAD]]);
        const { proof, amount } = proofFor(tree, thief);
        await sys.RewardDistributor.claim(roundId, thief, amount, proof);
        minted += amount;
      } catch (e) {
        refused = e;
        break;
      }
    }
    expect(refused.message).to.contain("EmissionCapExceeded");
    expect(minted).to.equal(100_000n * WAD); // the governed cap per period, not 18 x 10k
    expect(await sys.RewardToken.totalSupply()).to.equal(1_100_000n * WAD);
    expect(await L.emittedInWindow()).to.equal(100_000n * WAD);
    await time.increase(3 * 43_200); // three half-period buckets: the window no longer holds them
    expect(await L.emittedInWindow()).to.equal(0n);
    await recordNextRound(sys, [[thief, WAD]]);
    expect(await L.emittedInWindow()).to.equal(WAD);
  });

  it("refuses a round over the emission cap with the period's figures", async function () {
    const sys = await loadFixture(deployedSystem);
    const tl = await asTimelock(sys);
    await sys.ProtocolParameters.connect(tl).setParameter(P.EmissionCapPerPeriod, 15n * WAD);
    await recordNextRound(sys, [[sys.orgs[0], 10n * WAD]]);
    const now = BigInt(await time.latest());
    const bucketEnd = (now / 43_200n + 1n) * 43_200n;
    // The round of 10 leaves the window when its bucket is three buckets old.
    await expect(recordNextRound(sys, [[sys.orgs[0], 6n * WAD]])).to.be.revertedWithCustomError(sys.ContributionLedger, "EmissionCapExceeded")
      .withArgs(2, 6n * WAD, 10n * WAD, 15n * WAD, (v) => v === bucketEnd + 2n * 43_200n || v === bucketEnd + 3n * 43_200n);
    await recordNextRound(sys, [[sys.orgs[0], 5n * WAD]]);
  });

  it("pays nothing during the dispute window, in which a guardian or governance cancels a stolen key's root", async function () {
    const sys = await loadFixture(guardedSystem);
    const L = sys.ContributionLedger;
    const D = sys.RewardDistributor;
    const thief = sys.aggregator.address;
    const supply = await sys.RewardToken.totalSupply();
    const { tree, tx } = await recordRound(sys, 1, [[thief, 10_000n * WAD]]);
    const claimableAt = (await L.roundOf(1)).claimableAt;
    expect(claimableAt).to.equal(BigInt((await ethers.provider.getBlock((await (await tx).wait()).blockNumber)).timestamp) + 3600n);
    const { proof, amount } = proofFor(tree, thief);
    await expect(D.claim(1, thief, amount, proof)).to.be.revertedWithCustomError(L, "DisputeWindowOpen").withArgs(1, claimableAt);
    // The thief (or anyone else) cannot cancel or un-cancel; the guardian can.
    await expect(L.connect(sys.aggregator).cancelRewards(1, ethers.id("x"))).to.be.revertedWithCustomError(L, "NotGuardian").withArgs(thief);
    await expect(L.connect(sys.guardian).cancelRewards(9, ethers.id("x"))).to.be.revertedWithCustomError(L, "NoRewards").withArgs(9);
    await expect(L.connect(sys.guardian).cancelRewards(1, ethers.id("stolen-aggregator-key")))
      .to.emit(L, "RewardsCancelled").withArgs(1, sys.guardian.address, ethers.id("stolen-aggregator-key"));
    await expect(L.connect(sys.guardian).cancelRewards(1, ethers.id("x"))).to.be.revertedWithCustomError(L, "RewardsAreCancelled");
    await time.increaseTo(claimableAt);
    await expect(D.claim(1, thief, amount, proof)).to.be.revertedWithCustomError(L, "RewardsAreCancelled").withArgs(1);
    expect(await sys.RewardToken.totalSupply()).to.equal(supply);
    // Governance (the timelock) cancels too; after the window nobody can.
    const second = await recordRound(sys, 2, [[thief, WAD]]);
    const tl = await asTimelock(sys);
    await expect(L.connect(tl).cancelRewards(2, ethers.ZeroHash)).to.emit(L, "RewardsCancelled");
    const third = await recordRound(sys, 3, [[sys.orgs[0], WAD]]);
    const at3 = (await L.roundOf(3)).claimableAt;
    await time.increaseTo(at3);
    await expect(L.connect(sys.guardian).cancelRewards(3, ethers.ZeroHash)).to.be.revertedWithCustomError(L, "DisputeWindowClosed").withArgs(3, at3);
    const p3 = proofFor(third.tree, sys.orgs[0].address);
    await expect(D.claim(3, sys.orgs[0].address, p3.amount, p3.proof)).to.emit(D, "Claimed");
    expect(second.tree).to.not.equal(undefined);
  });

  it("needs real voting weight to propose: the threshold is above zero and cannot be set to zero", async function () {
    const sys = await loadFixture(deployedSystem);
    const gov = sys.FLGovernor;
    expect(await gov.proposalThreshold()).to.equal(1_000n * WAD);
    const params = await sys.ProtocolParameters.getAddress();
    const call = sys.ProtocolParameters.interface.encodeFunctionData("setParameter", [12, 0]);
    // The aggregator key holds no votes: it cannot even propose.
    await expect(gov.connect(sys.aggregator).propose([params], [0n], [call], "mint"))
      .to.be.revertedWithCustomError(gov, "GovernorInsufficientProposerVotes");
    const F = await ethers.getContractFactory("FLGovernor");
    await expect(F.deploy(await sys.RewardToken.getAddress(), await sys.Timelock.getAddress(), 1, 20, 0, 4))
      .to.be.revertedWithCustomError(F, "ZeroProposalThreshold");
    // Governance itself cannot lower it to zero either (the timelock's execution reverts).
    const zero = gov.interface.encodeFunctionData("setProposalThreshold", [0]);
    await expect(passProposal(sys, sys.orgs.slice(0, 5), [await gov.getAddress()], [zero], "threshold 0")).to.be.reverted;
    await expect(gov.connect(sys.orgs[0]).setProposalThreshold(0)).to.be.revertedWithCustomError(gov, "GovernorOnlyExecutor");
    const two = gov.interface.encodeFunctionData("setProposalThreshold", [2_000n * WAD]);
    await passProposal(sys, sys.orgs.slice(0, 5), [await gov.getAddress()], [two], "threshold 2000");
    expect(await gov.proposalThreshold()).to.equal(2_000n * WAD);
  });
});

function anyTime() {
  return (v) => typeof v === "bigint" && v > 0n;
}
