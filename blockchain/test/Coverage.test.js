// Paths the scenario tests do not take: views, refusals in unusual states, the governor's cancel path.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, mine } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, enroll, WAD } = require("./fixtures");

describe("Remaining paths", function () {
  it("reports stake, refuses a withdrawal without an exit, and re-enrollment with stake left", async function () {
    const sys = await loadFixture(deployedSystem);
    const [org] = sys.orgs;
    const reg = sys.ParticipantRegistry;
    expect(await reg.stakeOf(org.address)).to.equal(0n);
    await expect(reg.connect(org).withdraw()).to.be.revertedWithCustomError(reg, "InvalidStatus").withArgs(org.address, 0);
    await enroll(sys, org);
    expect(await reg.stakeOf(org.address)).to.equal(100n * WAD);
    await expect(reg.connect(org).withdraw()).to.be.revertedWithCustomError(reg, "InvalidStatus").withArgs(org.address, 1);
    await reg.connect(org).requestExit();
    // Exited but still holding stake: it cannot enroll again before withdrawing.
    await expect(enroll(sys, org)).to.be.revertedWithCustomError(reg, "AlreadyEnrolled").withArgs(org.address, 4);
  });

  it("lets a proposer cancel its pending proposal, and says proposals need queuing", async function () {
    const sys = await loadFixture(deployedSystem);
    const gov = sys.FLGovernor;
    const target = await sys.ProtocolParameters.getAddress();
    const call = sys.ProtocolParameters.interface.encodeFunctionData("setParameter", [12, 0]);
    await gov.connect(sys.orgs[0]).propose([target], [0n], [call], "fedavg");
    const id = await gov.hashProposal([target], [0n], [call], ethers.id("fedavg"));
    expect(await gov.proposalNeedsQueuing(id)).to.equal(true);
    await expect(gov.connect(sys.orgs[0]).cancel([target], [0n], [call], ethers.id("fedavg"))).to.emit(gov, "ProposalCanceled");
    expect(await gov.state(id)).to.equal(2n); // Canceled
    await mine(1);
  });

  it("deploys a token without a genesis allocation", async function () {
    const [admin] = await ethers.getSigners();
    const token = await (await ethers.getContractFactory("RewardToken")).deploy("n", "s", admin.address, ethers.ZeroAddress, 0n);
    expect(await token.totalSupply()).to.equal(0n);
  });
});
