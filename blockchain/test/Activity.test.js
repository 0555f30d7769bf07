// Issue 11.5: the governed activity_timeout suspends idle organizations on-chain.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { anyValue } = require("@nomicfoundation/hardhat-chai-matchers/withArgs");
const { deployedSystem, enroll, asTimelock, WAD } = require("./fixtures");

const Status = { None: 0n, Active: 1n, Suspended: 2n, Slashed: 3n, Exited: 4n };
const TIMEOUT = 7 * 24 * 3600;

describe("Activity timeout (issue 11.5)", function () {
  it("lets anyone suspend an organization idle past the timeout, on on-chain evidence only", async function () {
    const sys = await loadFixture(deployedSystem);
    const [idle, busy, keeper, never] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, idle);
    await enroll(sys, busy);
    const enrolledAt = (await reg.participantOf(idle.address)).lastActiveAt;
    await time.increase(TIMEOUT - 10);
    // The aggregator saw `busy` in a round: its evidence is refreshed; `idle` has none since enrolling.
    await expect(reg.connect(keeper).markActive(1, [busy.address])).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    await expect(reg.connect(sys.aggregator).markActive(1, [busy.address])).to.emit(reg, "ActivityRecorded")
      .withArgs(busy.address, 1, anyValue);
    expect((await reg.participantOf(busy.address)).lastRound).to.equal(1n);
    // Round 0 refreshes the activity alone; a participant's last round never goes back.
    await expect(reg.connect(sys.aggregator).markActive(0, [busy.address])).to.emit(reg, "ActivityRecorded");
    expect((await reg.participantOf(busy.address)).lastRound).to.equal(1n);
    await expect(reg.connect(sys.aggregator).markActive(1, [never.address])).to.be.revertedWithCustomError(reg, "NotEnrolled");
    await expect(reg.connect(keeper).suspendInactive([idle.address])).to.be.revertedWithCustomError(reg, "NotInactive")
      .withArgs(idle.address, enrolledAt + BigInt(TIMEOUT));
    await time.increase(20);
    await expect(reg.connect(keeper).suspendInactive([idle.address, busy.address])).to.be.revertedWithCustomError(reg, "NotInactive");
    await expect(reg.connect(keeper).suspendInactive([idle.address]))
      .to.emit(reg, "SuspendedForInactivity").withArgs(idle.address, enrolledAt)
      .and.to.emit(reg, "StatusChanged").withArgs(idle.address, Status.Active, Status.Suspended);
    const p = await reg.participantOf(idle.address);
    expect(p.status).to.equal(Status.Suspended);
    expect(p.inactive).to.equal(true);
    expect(await reg.activeCount()).to.equal(1n);
    await expect(reg.connect(keeper).suspendInactive([idle.address])).to.be.revertedWithCustomError(reg, "InvalidStatus");
    await expect(reg.connect(keeper).suspendInactive(Array(2049).fill(idle.address))).to.be.revertedWithCustomError(reg, "BatchTooLarge");
    await expect(reg.connect(sys.aggregator).markActive(1, Array(2049).fill(idle.address))).to.be.revertedWithCustomError(reg, "BatchTooLarge");
  });

  it("lets an organization suspended for inactivity resume itself, but not one suspended by the slasher", async function () {
    const sys = await loadFixture(deployedSystem);
    const [idle, punished] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, idle);
    await enroll(sys, punished);
    await expect(reg.connect(idle).resume()).to.be.revertedWithCustomError(reg, "InvalidStatus");
    await reg.connect(sys.aggregator).suspend(punished.address);
    await time.increase(TIMEOUT + 1);
    await reg.suspendInactive([idle.address]);
    await expect(reg.connect(punished).resume()).to.be.revertedWithCustomError(reg, "InvalidStatus");
    await expect(reg.connect(idle).resume()).to.emit(reg, "StatusChanged").withArgs(idle.address, Status.Suspended, Status.Active);
    const p = await reg.participantOf(idle.address);
    expect(p.inactive).to.equal(false);
    expect(p.lastActiveAt).to.equal(BigInt(await time.latest()));
    // Resuming needs the governed minimum stake, as reinstating does.
    await time.increase(TIMEOUT + 1);
    await reg.suspendInactive([idle.address]);
    const tl = await asTimelock(sys);
    await sys.ProtocolParameters.connect(tl).setParameter(1, 200n * WAD); // MinStake
    await expect(reg.connect(idle).resume()).to.be.revertedWithCustomError(reg, "StakeBelowMinimum").withArgs(100n * WAD, 200n * WAD);
    await expect(reg.connect(sys.aggregator).reinstate(punished.address)).to.be.revertedWithCustomError(reg, "StakeBelowMinimum");
    await sys.RewardToken.connect(idle).approve(await reg.getAddress(), 100n * WAD);
    await reg.connect(idle).addStake(100n * WAD);
    await expect(reg.connect(idle).resume()).to.emit(reg, "StatusChanged");
  });
});
