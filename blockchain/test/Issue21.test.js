// Issue 21, on-chain items: each attack of the adversarial review, performed with the default deployment's
// parameters, and shown stopped (the tests fail on the contracts before the fix).
const { expect } = require("chai");
const hre = require("hardhat");
const { ethers } = hre;
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { anyValue } = require("@nomicfoundation/hardhat-chai-matchers/withArgs");
const { deployAll } = require("../scripts/deployLib");
const { defaultsSystem, enroll, recordRound, recordNextRound, proofFor, asTimelock, WAD } = require("./fixtures");

const Status = { None: 0n, Active: 1n, Suspended: 2n, Slashed: 3n, Exited: 4n };
const REASON = ethers.id("stolen-key");
const SLASH = ethers.id("fedledger:round:40:byzantine");
const DAY = 24 * 3600;
const P = { RoundRewardBudget: 26 };

describe("Issue 21.1: a stolen aggregator key, default deployment", function () {
  it("the issue's attack: the guardian cancels every root and revokes the key inside the window; nothing is minted, no vote gained", async function () {
    const sys = await loadFixture(defaultsSystem);
    const L = sys.ContributionLedger;
    const reg = sys.ParticipantRegistry;
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
    await expect(reg.connect(guardian).revokeOperator(thief.address, REASON))
      .to.emit(reg, "OperatorRevoked").withArgs(thief.address, guardian.address, REASON);
    await expect(L.connect(guardian).revokeAggregator(thief.address, REASON)).to.be.revertedWithCustomError(L, "NotAggregator");
    await expect(reg.connect(guardian).revokeOperator(thief.address, REASON)).to.be.revertedWithCustomError(reg, "NotOperator");

    // The key records, marks and slashes nothing more, and nothing it recorded ever pays.
    await expect(recordNextRound(sys, [[thief, WAD]])).to.be.revertedWithCustomError(L, "AccessControlUnauthorizedAccount");
    await expect(reg.connect(thief).slash(sys.orgs[0].address, 1n, REASON)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    await expect(reg.connect(thief).markActive(1, [sys.orgs[0].address])).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
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

describe("Issue 21.2: a stolen slasher key", function () {
  it("the issue's attack: four whole stakes and a suspension become 10 % each, the rest cancelled and reversed by the guardian", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry;
    const thief = sys.aggregator; // the default deployment's slasher
    const { guardian } = sys;
    const victims = sys.orgs.slice(0, 4);
    const fifth = sys.orgs[4];
    for (const o of [...victims, fifth]) await enroll(sys, o);
    const treasury = await sys.Timelock.getAddress();
    const before = await sys.RewardToken.balanceOf(treasury);

    for (const v of victims) {
      await expect(reg.connect(thief).slash(v.address, 100n * WAD, REASON))
        .to.emit(reg, "Slashed").withArgs(v.address, 10n * WAD, REASON, 90n * WAD)
        .and.to.emit(reg, "SlashQueued").withArgs(v.address, 90n * WAD, REASON, anyValue, 90n * WAD);
    }
    await reg.connect(thief).suspend(fifth.address);
    // Again at once: the prompt part is spent for a day, so everything waits.
    await expect(reg.connect(thief).slash(victims[0].address, 90n * WAD, REASON)).to.emit(reg, "SlashQueued")
      .and.not.to.emit(reg, "Slashed");
    expect(await reg.promptSlashAllowance(victims[0].address)).to.equal(0n);
    expect(await sys.RewardToken.balanceOf(treasury)).to.equal(before + 40n * WAD);

    // Inside the window the guardian cancels the pending slashes, takes the key's roles and reverses the rest.
    await time.increase(3600);
    const cancel = reg.connect(guardian).cancelSlashes(victims.map((v) => v.address), REASON);
    await expect(cancel).to.emit(reg, "SlashCancelled").withArgs(victims[0].address, 90n * WAD, guardian.address, REASON);
    await expect(cancel).to.emit(reg, "SlashCancelled").withArgs(victims[3].address, 90n * WAD, guardian.address, REASON);
    await reg.connect(guardian).revokeOperator(thief.address, REASON);
    await expect(reg.connect(guardian).reinstate(fifth.address))
      .to.emit(reg, "StatusChanged").withArgs(fifth.address, Status.Suspended, Status.Active);
    for (const v of victims) {
      // Back to the minimum stake (the 10 % is in the treasury, for governance to return), then reinstated.
      await expect(reg.connect(guardian).reinstate(v.address)).to.be.revertedWithCustomError(reg, "StakeBelowMinimum");
      await sys.RewardToken.connect(v).approve(await reg.getAddress(), 10n * WAD);
      await reg.connect(v).addStake(10n * WAD);
      await expect(reg.connect(guardian).reinstate(v.address))
        .to.emit(reg, "StatusChanged").withArgs(v.address, Status.Slashed, Status.Active);
    }
    await time.increase(2 * DAY);
    await expect(reg.executeSlash(victims[0].address)).to.be.revertedWithCustomError(reg, "NoPendingSlash");
    for (const o of [...victims, fifth]) expect(await reg.stakeOf(o.address)).to.equal(100n * WAD);
    expect(await reg.activeCount()).to.equal(5n);
    await expect(reg.connect(thief).suspend(fifth.address)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
  });

  it("executes an uncancelled pending slash after its window, by anyone; too late to cancel then", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry.connect(sys.aggregator);
    const [org, anyone] = sys.orgs;
    await enroll(sys, org);
    await expect(reg.slash(org.address, 50n * WAD, SLASH)).to.emit(reg, "Slashed").withArgs(org.address, 10n * WAD, SLASH, 90n * WAD);
    const { amount, executableAt } = await reg.pendingSlashOf(org.address);
    expect(amount).to.equal(40n * WAD);
    expect(executableAt).to.equal(BigInt(await time.latest()) + BigInt(DAY));
    // A second one adds to it and restarts the window, never beyond the stake.
    await expect(reg.slash(org.address, 90n * WAD, SLASH)).to.emit(reg, "SlashQueued").withArgs(org.address, 90n * WAD, SLASH, anyValue, 90n * WAD);
    const at = (await reg.pendingSlashOf(org.address)).executableAt;
    await expect(reg.connect(anyone).executeSlash(org.address)).to.be.revertedWithCustomError(reg, "SlashWindowOpen").withArgs(org.address, at);
    await expect(reg.connect(anyone).cancelSlashes([org.address], REASON)).to.be.revertedWithCustomError(reg, "NotGuardian").withArgs(anyone.address);
    await expect(reg.connect(sys.guardian).cancelSlashes(Array(2049).fill(org.address), REASON)).to.be.revertedWithCustomError(reg, "BatchTooLarge");
    await time.increaseTo(at);
    await expect(reg.connect(sys.guardian).cancelSlashes([org.address], REASON)).to.be.revertedWithCustomError(reg, "SlashWindowClosed").withArgs(org.address, at);
    await expect(reg.connect(anyone).executeSlash(org.address))
      .to.emit(reg, "Slashed").withArgs(org.address, 90n * WAD, await reg.PENDING_SLASH_REASON(), 0n);
    expect(await reg.totalStaked()).to.equal(0n);
    await expect(reg.connect(anyone).executeSlash(org.address)).to.be.revertedWithCustomError(reg, "NoPendingSlash").withArgs(org.address);
    await expect(reg.connect(sys.guardian).cancelSlashes([org.address], REASON)).to.be.revertedWithCustomError(reg, "NoPendingSlash");
  });

  it("executes a pending slash capped at what is left after later prompt slashes", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry.connect(sys.aggregator);
    const [org] = sys.orgs;
    await enroll(sys, org);
    await reg.slash(org.address, 100n * WAD, SLASH); // 10 now, 90 pending
    await time.increase(DAY + 1);
    await reg.slash(org.address, 9n * WAD, SLASH); // prompt again (a day later): 81 left, 90 pending
    await expect(reg.executeSlash(org.address)).to.emit(reg, "Slashed").withArgs(org.address, 81n * WAD, anyValue, 0n);
  });

  it("keeps its settings in range, changed by governance only", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry;
    expect(await reg.slashDelay()).to.equal(BigInt(DAY));
    expect(await reg.promptSlashBps()).to.equal(1000n);
    await expect(reg.connect(sys.guardian).setSlashDelay(3600)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    await expect(reg.connect(sys.guardian).setPromptSlashBps(0)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    const timelock = await asTimelock(sys);
    await expect(reg.connect(timelock).setSlashDelay(3599)).to.be.revertedWithCustomError(reg, "SettingOutOfRange").withArgs(3599, 3600, 30 * DAY);
    await expect(reg.connect(timelock).setSlashDelay(30 * DAY + 1)).to.be.revertedWithCustomError(reg, "SettingOutOfRange");
    await expect(reg.connect(timelock).setSlashDelay(2 * DAY)).to.emit(reg, "SlashDelayChanged").withArgs(DAY, 2 * DAY);
    await expect(reg.connect(timelock).setPromptSlashBps(5001)).to.be.revertedWithCustomError(reg, "SettingOutOfRange").withArgs(5001, 0, 5000);
    await expect(reg.connect(timelock).setPromptSlashBps(0)).to.emit(reg, "PromptSlashBpsChanged").withArgs(1000, 0);
    // With no prompt part every slash waits its window.
    const [org] = sys.orgs;
    await enroll(sys, org);
    await expect(reg.connect(sys.aggregator).slash(org.address, WAD, SLASH)).to.emit(reg, "SlashQueued").and.not.to.emit(reg, "Slashed");
    expect((await reg.participantOf(org.address)).status).to.equal(Status.Active);
    await time.increase(2 * DAY);
    await expect(reg.executeSlash(org.address)).to.emit(reg, "StatusChanged").withArgs(org.address, Status.Active, Status.Slashed);
    // The deploy script sets them from its configuration.
    const custom = await deployAll(hre, { slashDelay: 7200n, promptSlashBps: 500n, maxRoundGap: 64n });
    expect(await custom.contracts.ParticipantRegistry.slashDelay()).to.equal(7200n);
    expect(await custom.contracts.ParticipantRegistry.promptSlashBps()).to.equal(500n);
    expect(await custom.contracts.ContributionLedger.maxRoundGap()).to.equal(64n);
  });

  it("reinstates a slashed organization only as a guardian or governance, a suspended one as the slasher too", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry;
    const [org] = sys.orgs;
    await enroll(sys, org, 200n * WAD);
    await reg.connect(sys.aggregator).slash(org.address, WAD, SLASH);
    await expect(reg.connect(sys.aggregator).reinstate(org.address)).to.be.revertedWithCustomError(reg, "InvalidStatus")
      .withArgs(org.address, Status.Slashed);
    const timelock = await asTimelock(sys);
    await expect(reg.connect(timelock).reinstate(org.address)).to.emit(reg, "StatusChanged").withArgs(org.address, Status.Slashed, Status.Active);
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
    await expect(sys.ParticipantRegistry.connect(sys.aggregator).markActive(max + 1n, [sys.orgs[0].address]))
      .to.be.revertedWithCustomError(sys.ParticipantRegistry, "RoundIdOutOfRange");
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

  it("does not unlock a pending exit by jumping past a round the organization took part in", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry;
    const [org, other] = sys.orgs;
    await enroll(sys, org);
    await recordNextRound(sys, [[other, WAD]]); // round 1
    // The organization took part in round 3 (closed, not yet posted); it asks to leave.
    await reg.connect(sys.aggregator).markActive(3, [org.address]);
    await reg.connect(org).requestExit(); // unlock round 2
    // The stolen key jumps the ids as far as it may: past round 3, which can then never be recorded.
    await recordRound(sys, 1n + 1024n, [[other, 0n]]); // pays nothing: no cap, no window
    await time.increase(3 * DAY);
    await expect(reg.connect(org).withdraw()).to.be.revertedWithCustomError(reg, "ParticipationUnposted").withArgs(org.address, 3);
    // Only governance lifts it (e.g. after checking that round 3 slashed nothing).
    const timelock = await asTimelock(sys);
    await reg.connect(timelock).releaseExit(org.address);
    await expect(reg.connect(org).withdraw()).to.emit(reg, "Withdrawn").withArgs(org.address, 100n * WAD);
  });
});

describe("Issue 21.5 and 21.7: an exit waits for every round the organization took part in", function () {
  it("the issue's attack: flagged in round 40 with round 11 unposted, it cannot withdraw before round 40's slash", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry;
    const [attacker, honest] = sys.orgs;
    await enroll(sys, attacker);
    await enroll(sys, honest);
    for (let r = 1n; r <= 10n; r++) await recordRound(sys, r, [[honest, WAD]]);
    // Rounds 11..40 closed with the attacker in them (the aggregator marks participation at each close);
    // posting lags. Round 40 flagged it with conclusive evidence.
    for (const r of [11, 25, 40]) await reg.connect(sys.aggregator).markActive(r, [attacker.address]);
    await expect(reg.connect(attacker).requestExit()).to.emit(reg, "ExitRequested").withArgs(attacker.address, anyValue, 11);
    await recordRound(sys, 11n, [[honest, WAD]]);
    await time.increase(3 * DAY);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "ParticipationUnposted").withArgs(attacker.address, 40);
    await recordRound(sys, 39n, [[honest, WAD]]);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "ParticipationUnposted");
    // Posting round 40: the slash first (conclusive evidence: 10 % at once, and here the whole stake asked for,
    // the rest after the window), then the record.
    expect(await reg.promptSlashAllowance(attacker.address)).to.equal(10n * WAD);
    await expect(reg.connect(sys.aggregator).slash(attacker.address, 100n * WAD, SLASH))
      .to.emit(reg, "Slashed").withArgs(attacker.address, 10n * WAD, SLASH, 90n * WAD);
    await recordRound(sys, 40n, [[honest, WAD]]);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "SlashPending")
      .withArgs(attacker.address, 90n * WAD, anyValue);
    await time.increase(DAY);
    await reg.executeSlash(attacker.address);
    await expect(reg.connect(attacker).withdraw()).to.be.revertedWithCustomError(reg, "NothingToWithdraw");
    expect(await reg.totalStaked()).to.equal(100n * WAD);
  });

  it("an organization that took part in no later round exits as before", async function () {
    const sys = await loadFixture(defaultsSystem);
    const reg = sys.ParticipantRegistry;
    const [org] = sys.orgs;
    await enroll(sys, org);
    await recordNextRound(sys, [[org, WAD]]);
    await reg.connect(sys.aggregator).markActive(1, [org.address]); // marked after its round was posted
    await reg.connect(org).requestExit();
    await time.increase(3 * DAY);
    await recordNextRound(sys, [[sys.orgs[1], WAD]]);
    await expect(reg.connect(org).withdraw()).to.emit(reg, "Withdrawn");
    // Enrolling again starts a fresh record of rounds.
    await enroll(sys, org);
    expect((await reg.participantOf(org.address)).lastRound).to.equal(0n);
  });
});
