const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, WAD } = require("./fixtures");

describe("Deployment wiring", function () {
  it("hands every admin role to the timelock and leaves the deployer nothing", async function () {
    const sys = await loadFixture(deployedSystem);
    const tl = await sys.Timelock.getAddress();
    for (const name of ["RewardToken", "ProtocolParameters", "ParticipantRegistry", "ContributionLedger"]) {
      const c = sys[name];
      const admin = await c.DEFAULT_ADMIN_ROLE();
      expect(await c.hasRole(admin, tl), `${name} admin`).to.equal(true);
      expect(await c.hasRole(admin, sys.deployer.address), `${name} deployer admin`).to.equal(false);
      expect(await c.hasRole(admin, sys.aggregator.address), `${name} aggregator admin`).to.equal(false);
    }
    expect(await sys.Timelock.hasRole(await sys.Timelock.DEFAULT_ADMIN_ROLE(), sys.deployer.address)).to.equal(false);
    expect(await sys.Timelock.hasRole(await sys.Timelock.PROPOSER_ROLE(), await sys.FLGovernor.getAddress())).to.equal(true);
    expect(await sys.Timelock.hasRole(await sys.Timelock.EXECUTOR_ROLE(), ethers.ZeroAddress)).to.equal(true);
    expect(await sys.ProtocolParameters.hasRole(await sys.ProtocolParameters.GOVERNOR_ROLE(), tl)).to.equal(true);
    expect(await sys.ProtocolParameters.hasRole(await sys.ProtocolParameters.GOVERNOR_ROLE(), sys.deployer.address)).to.equal(false);
    // Governance may cancel rewards in their dispute window, and so may the guardian: on the dev chain the
    // well-known dev account #19, never the timelock, the deployer or the aggregator.
    const guardian = await sys.ContributionLedger.GUARDIAN_ROLE();
    const devGuardian = (await ethers.getSigners())[19].address;
    expect(sys.result.guardian).to.equal(devGuardian);
    expect(await sys.ContributionLedger.hasRole(guardian, tl)).to.equal(true);
    expect(await sys.ContributionLedger.hasRole(guardian, devGuardian)).to.equal(true);
    expect(await sys.ParticipantRegistry.hasRole(await sys.ParticipantRegistry.GUARDIAN_ROLE(), devGuardian)).to.equal(true);
    for (const who of [sys.deployer.address, sys.aggregator.address]) {
      expect(await sys.ContributionLedger.hasRole(guardian, who)).to.equal(false);
      expect(await sys.ParticipantRegistry.hasRole(guardian, who)).to.equal(false);
    }
    // The ledger and the distributor trust each other's immutable address only.
    expect(await sys.ContributionLedger.distributor()).to.equal(await sys.RewardDistributor.getAddress());
    expect(await sys.RewardDistributor.ledger()).to.equal(await sys.ContributionLedger.getAddress());
    expect(await sys.ParticipantRegistry.ledger()).to.equal(await sys.ContributionLedger.getAddress());
    expect(await sys.FLGovernor.proposalThreshold()).to.be.greaterThan(0n);
  });

  it("grants GUARDIAN_ROLE to a configured guardian and sets the dispute window", async function () {
    const { guardedSystem } = require("./fixtures");
    const sys = await loadFixture(guardedSystem);
    expect(await sys.ContributionLedger.hasRole(await sys.ContributionLedger.GUARDIAN_ROLE(), sys.guardian.address)).to.equal(true);
    expect(await sys.ProtocolParameters.get(46)).to.equal(3600n);
    expect(sys.result.guardian).to.equal(sys.guardian.address);
  });

  it("gives the aggregator only its operational roles", async function () {
    const sys = await loadFixture(deployedSystem);
    const a = sys.aggregator.address;
    expect(await sys.ContributionLedger.hasRole(await sys.ContributionLedger.AGGREGATOR_ROLE(), a)).to.equal(true);
    expect(await sys.ContributionLedger.hasRole(await sys.ContributionLedger.GUARDIAN_ROLE(), a)).to.equal(false);
    expect(await sys.ParticipantRegistry.hasRole(await sys.ParticipantRegistry.SLASHER_ROLE(), a)).to.equal(true);
    expect(await sys.ParticipantRegistry.hasRole(await sys.ParticipantRegistry.AGGREGATOR_ROLE(), a)).to.equal(true);
    expect(await sys.RewardToken.hasRole(await sys.RewardToken.MINTER_ROLE(), a)).to.equal(false);
    expect(await sys.ProtocolParameters.hasRole(await sys.ProtocolParameters.GOVERNOR_ROLE(), a)).to.equal(false);
    expect(await sys.RewardToken.hasRole(await sys.RewardToken.MINTER_ROLE(), await sys.RewardDistributor.getAddress())).to.equal(true);
  });

  it("funds dev organizations with delegated votes and gives the rest of genesis to the treasury", async function () {
    const sys = await loadFixture(deployedSystem);
    const grant = sys.result.config.devGrant;
    const org = sys.orgs[0];
    expect(await sys.RewardToken.balanceOf(org.address)).to.equal(grant);
    expect(await sys.RewardToken.getVotes(org.address)).to.equal(grant);
    const funded = BigInt(sys.result.devFunded.length);
    expect(await sys.RewardToken.balanceOf(await sys.Timelock.getAddress())).to.equal(sys.result.config.genesisSupply - funded * grant);
    expect(await sys.RewardToken.balanceOf(sys.deployer.address)).to.equal(0n);
    expect(await sys.RewardToken.totalSupply()).to.equal(1_000_000n * WAD);
  });
});
