const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, WAD } = require("./fixtures");

describe("RewardToken", function () {
  it("has the configured name and symbol", async function () {
    const { RewardToken } = await loadFixture(deployedSystem);
    expect(await RewardToken.symbol()).to.equal("DALLA");
    expect(await RewardToken.decimals()).to.equal(18n);
  });

  it("lets only the minter mint", async function () {
    const sys = await loadFixture(deployedSystem);
    const role = await sys.RewardToken.MINTER_ROLE();
    for (const who of [sys.deployer, sys.aggregator, sys.orgs[0]]) {
      await expect(sys.RewardToken.connect(who).mint(who.address, 1n))
        .to.be.revertedWithCustomError(sys.RewardToken, "AccessControlUnauthorizedAccount").withArgs(who.address, role);
    }
  });

  it("refuses a zero admin or a zero genesis recipient", async function () {
    const F = await ethers.getContractFactory("RewardToken");
    const [s] = await ethers.getSigners();
    await expect(F.deploy("n", "s", ethers.ZeroAddress, s.address, 0n)).to.be.revertedWithCustomError(F, "ZeroAddress");
    await expect(F.deploy("n", "s", s.address, ethers.ZeroAddress, 1n)).to.be.revertedWithCustomError(F, "ZeroAddress");
  });

  it("accepts EIP-2612 permits and tracks checkpointed votes", async function () {
    const sys = await loadFixture(deployedSystem);
    const [owner, spender] = sys.orgs;
    const token = sys.RewardToken;
    const deadline = (await time.latest()) + 3600;
    const value = 5n * WAD;
    const domain = { name: await token.name(), version: "1", chainId: 31337, verifyingContract: await token.getAddress() };
    const types = { Permit: [
      { name: "owner", type: "address" }, { name: "spender", type: "address" }, { name: "value", type: "uint256" },
      { name: "nonce", type: "uint256" }, { name: "deadline", type: "uint256" }] };
    const sig = ethers.Signature.from(await owner.signTypedData(domain, types,
      { owner: owner.address, spender: spender.address, value, nonce: await token.nonces(owner.address), deadline }));
    await token.permit(owner.address, spender.address, value, deadline, sig.v, sig.r, sig.s);
    expect(await token.allowance(owner.address, spender.address)).to.equal(value);
    const before = await token.getVotes(owner.address);
    await token.connect(owner).transfer(spender.address, value);
    expect(await token.getVotes(owner.address)).to.equal(before - value);
  });
});
