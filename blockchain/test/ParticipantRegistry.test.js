const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, enroll, recordNextRound, WAD } = require("./fixtures");

const Status = { None: 0n, Active: 1n, Suspended: 2n, Slashed: 3n, Exited: 4n };
const REASON = ethers.encodeBytes32String("low_honesty");

describe("ParticipantRegistry", function () {
  it("enrolls with at least the minimum stake", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await sys.RewardToken.connect(org).approve(await reg.getAddress(), 1000n * WAD);
    await expect(reg.connect(org).enroll(99n * WAD)).to.be.revertedWithCustomError(reg, "StakeBelowMinimum").withArgs(99n * WAD, 100n * WAD);
    await expect(reg.connect(org).enroll(150n * WAD)).to.emit(reg, "Enrolled").withArgs(org.address, 150n * WAD)
      .and.to.emit(reg, "StatusChanged").withArgs(org.address, Status.None, Status.Active);
    const p = await reg.participantOf(org.address);
    expect(p.stake).to.equal(150n * WAD);
    expect(p.status).to.equal(Status.Active);
    expect(await reg.isActive(org.address)).to.equal(true);
    expect(await reg.activeCount()).to.equal(1n);
    expect(await reg.totalStaked()).to.equal(150n * WAD);
    await expect(reg.connect(org).enroll(150n * WAD)).to.be.revertedWithCustomError(reg, "AlreadyEnrolled");
  });

  it("enrolls with a permit instead of an approval", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org] = sys.orgs;
    const token = sys.RewardToken;
    const reg = sys.ParticipantRegistry;
    const value = 100n * WAD;
    const deadline = (await time.latest()) + 600;
    const domain = { name: await token.name(), version: "1", chainId: 31337, verifyingContract: await token.getAddress() };
    const types = { Permit: [{ name: "owner", type: "address" }, { name: "spender", type: "address" },
      { name: "value", type: "uint256" }, { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" }] };
    const sig = ethers.Signature.from(await org.signTypedData(domain, types,
      { owner: org.address, spender: await reg.getAddress(), value, nonce: 0n, deadline }));
    await reg.connect(org).enrollWithPermit(value, deadline, sig.v, sig.r, sig.s);
    expect(await reg.isActive(org.address)).to.equal(true);
  });

  it("adds stake only for active, suspended or slashed participants", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org, other] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await expect(reg.connect(other).addStake(1n)).to.be.revertedWithCustomError(reg, "InvalidStatus");
    await enroll(sys, org);
    await expect(reg.connect(org).addStake(0n)).to.be.revertedWithCustomError(reg, "ZeroAmount");
    await sys.RewardToken.connect(org).approve(await reg.getAddress(), 5n * WAD);
    await expect(reg.connect(org).addStake(5n * WAD)).to.emit(reg, "StakeAdded").withArgs(org.address, 5n * WAD, 105n * WAD);
  });

  it("keeps stake through the unbonding period and releases it after", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await expect(reg.connect(org).requestExit()).to.be.revertedWithCustomError(reg, "InvalidStatus");
    await enroll(sys, org);
    const balance = await sys.RewardToken.balanceOf(org.address);
    await expect(reg.connect(org).requestExit()).to.emit(reg, "ExitRequested");
    expect(await reg.activeCount()).to.equal(0n);
    await expect(reg.connect(org).withdraw()).to.be.revertedWithCustomError(reg, "UnbondingNotOver");
    await time.increase(3 * 24 * 3600);
    await recordNextRound(sys, [[sys.orgs[5], WAD]]);
    await expect(reg.connect(org).withdraw()).to.emit(reg, "Withdrawn").withArgs(org.address, 100n * WAD);
    expect(await sys.RewardToken.balanceOf(org.address)).to.equal(balance + 100n * WAD);
    await expect(reg.connect(org).withdraw()).to.be.revertedWithCustomError(reg, "NothingToWithdraw");
    // Re-enrolling after a full exit is allowed.
    await enroll(sys, org);
    expect(await reg.isActive(org.address)).to.equal(true);
  });

  it("lets only the slasher slash, sends the stake to the treasury, and marks the participant", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org, stranger] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await expect(reg.connect(sys.aggregator).slash(org.address, 1n, REASON)).to.be.revertedWithCustomError(reg, "NotEnrolled");
    await enroll(sys, org);
    await expect(reg.connect(stranger).slash(org.address, 1n, REASON)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    await expect(reg.connect(sys.aggregator).slash(org.address, 0n, REASON)).to.be.revertedWithCustomError(reg, "ZeroAmount");
    await expect(reg.connect(sys.aggregator).slash(org.address, 101n * WAD, REASON)).to.be.revertedWithCustomError(reg, "SlashExceedsStake");
    const treasury = await sys.Timelock.getAddress();
    const before = await sys.RewardToken.balanceOf(treasury);
    await expect(reg.connect(sys.aggregator).slash(org.address, 10n * WAD, REASON))
      .to.emit(reg, "Slashed").withArgs(org.address, 10n * WAD, REASON, 90n * WAD);
    expect(await sys.RewardToken.balanceOf(treasury)).to.equal(before + 10n * WAD);
    expect((await reg.participantOf(org.address)).status).to.equal(Status.Slashed);
    expect(await reg.isActive(org.address)).to.equal(false);
    expect(await reg.activeCount()).to.equal(0n);
  });

  it("still slashes a participant that is unbonding (stake cannot flee)", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, org);
    await reg.connect(org).requestExit();
    await reg.connect(sys.aggregator).slash(org.address, 10n * WAD, REASON);
    expect((await reg.participantOf(org.address)).status).to.equal(Status.Exited);
    await time.increase(3 * 24 * 3600);
    await recordNextRound(sys, [[sys.orgs[5], WAD]]);
    await expect(reg.connect(org).withdraw()).to.emit(reg, "Withdrawn").withArgs(org.address, 90n * WAD);
  });

  it("suspends and reinstates through the slasher role", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org, stranger] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, org);
    await expect(reg.connect(stranger).suspend(org.address)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    await reg.connect(sys.aggregator).suspend(org.address);
    await expect(reg.connect(sys.aggregator).suspend(org.address)).to.be.revertedWithCustomError(reg, "InvalidStatus");
    expect(await reg.isActive(org.address)).to.equal(false);
    await expect(reg.connect(stranger).reinstate(org.address)).to.be.revertedWithCustomError(reg, "NotGuardian").withArgs(stranger.address);
    await reg.connect(sys.aggregator).reinstate(org.address);
    await expect(reg.connect(sys.aggregator).reinstate(org.address)).to.be.revertedWithCustomError(reg, "InvalidStatus");
    expect(await reg.isActive(org.address)).to.equal(true);
  });

  it("counts Byzantine detections in bounded batches", async function () {
    const sys = await loadFixture(deployedSystem);
    const [a, b, stranger] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    await enroll(sys, a);
    await enroll(sys, b);
    await expect(reg.connect(stranger).recordByzantine([a.address])).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    await expect(reg.connect(sys.aggregator).recordByzantine([a.address, b.address, a.address]))
      .to.emit(reg, "ByzantineRecorded").withArgs(a.address, 2);
    expect((await reg.participantOf(a.address)).byzantineCount).to.equal(2n);
    await expect(reg.connect(sys.aggregator).recordByzantine([stranger.address])).to.be.revertedWithCustomError(reg, "NotEnrolled");
    const tooMany = Array(2049).fill(a.address);
    await expect(reg.connect(sys.aggregator).recordByzantine(tooMany)).to.be.revertedWithCustomError(reg, "BatchTooLarge");
  });

  it("changes the treasury only through its admin", async function () {
    const sys = await loadFixture(deployedSystem);
    const reg = sys.ParticipantRegistry;
    await expect(reg.connect(sys.deployer).setTreasury(sys.deployer.address)).to.be.revertedWithCustomError(reg, "AccessControlUnauthorizedAccount");
    const tl = await ethers.getImpersonatedSigner(await sys.Timelock.getAddress());
    await sys.deployer.sendTransaction({ to: tl.address, value: WAD });
    await expect(reg.connect(tl).setTreasury(ethers.ZeroAddress)).to.be.revertedWithCustomError(reg, "ZeroAddress");
    await expect(reg.connect(tl).setTreasury(sys.orgs[0].address)).to.emit(reg, "TreasuryChanged");
  });

  it("refuses zero addresses at construction", async function () {
    const sys = await loadFixture(deployedSystem);
    const R = await ethers.getContractFactory("ParticipantRegistry");
    const good = [await sys.RewardToken.getAddress(), await sys.ProtocolParameters.getAddress(),
      await sys.ContributionLedger.getAddress(), sys.deployer.address, sys.deployer.address];
    for (let i = 0; i < good.length; i++) {
      const args = [...good];
      args[i] = ethers.ZeroAddress;
      await expect(R.deploy(...args)).to.be.revertedWithCustomError(R, "ZeroAddress");
    }
  });
});
