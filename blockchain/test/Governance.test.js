const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, mine, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, passProposal } = require("./fixtures");

const STRATEGY = 12;
const State = { Pending: 0n, Active: 1n, Canceled: 2n, Defeated: 3n, Succeeded: 4n, Queued: 5n, Expired: 6n, Executed: 7n };

describe("Governance: FLGovernor + timelock", function () {
  it("changes a governed parameter through propose, vote, queue, execute", async function () {
    const sys = await loadFixture(deployedSystem);
    const params = sys.ProtocolParameters;
    const target = await params.getAddress();
    const call = params.interface.encodeFunctionData("setParameter", [STRATEGY, 0]);
    // 4% quorum of 1M = 40k votes; each dev org holds 10k.
    const voters = sys.orgs.slice(0, 5);
    const id = await passProposal(sys, voters, [target], [call], "Use FedAvg");
    expect(await sys.FLGovernor.state(id)).to.equal(State.Executed);
    expect(await params.get(STRATEGY)).to.equal(0n);
  });

  it("counts castVote, castVoteWithReason and castVoteBySig, and fails without quorum", async function () {
    const sys = await loadFixture(deployedSystem);
    const gov = sys.FLGovernor;
    const [proposer, v1, v2] = sys.orgs;
    const target = await sys.ProtocolParameters.getAddress();
    const call = sys.ProtocolParameters.interface.encodeFunctionData("setParameter", [STRATEGY, 2]);
    await gov.connect(proposer).propose([target], [0n], [call], "Use the median");
    const id = await gov.hashProposal([target], [0n], [call], ethers.id("Use the median"));
    expect(await gov.state(id)).to.equal(State.Pending);
    await expect(gov.connect(v1).castVote(id, 1)).to.be.revertedWithCustomError(gov, "GovernorUnexpectedProposalState");
    await mine(2);
    expect(await gov.state(id)).to.equal(State.Active);
    await gov.connect(proposer).castVote(id, 1);
    await expect(gov.connect(v1).castVoteWithReason(id, 0, "median is slower")).to.emit(gov, "VoteCast");
    // v2 signs an EIP-712 ballot; anyone relays it.
    const domain = { name: "FLGovernor", version: "1", chainId: 31337, verifyingContract: await gov.getAddress() };
    const types = { Ballot: [{ name: "proposalId", type: "uint256" }, { name: "support", type: "uint8" },
      { name: "voter", type: "address" }, { name: "nonce", type: "uint256" }] };
    const nonce = await gov.nonces(v2.address);
    const signature = await v2.signTypedData(domain, types, { proposalId: id, support: 2, voter: v2.address, nonce });
    await expect(gov.connect(proposer).castVoteBySig(id, 2, v2.address, signature)).to.emit(gov, "VoteCast");
    await expect(gov.castVoteBySig(id, 2, v2.address, signature)).to.be.reverted; // nonce used
    await expect(gov.connect(v1).castVote(id, 1)).to.be.revertedWithCustomError(gov, "GovernorAlreadyCastVote");
    const votes = await gov.proposalVotes(id);
    const w = 10_000n * 10n ** 18n;
    expect(votes.forVotes).to.equal(w);
    expect(votes.againstVotes).to.equal(w);
    expect(votes.abstainVotes).to.equal(w);
    await mine(Number(await gov.votingPeriod()) + 1);
    // 20k counted toward quorum (for + abstain) < 40k: defeated.
    expect(await gov.state(id)).to.equal(State.Defeated);
  });

  it("refuses direct parameter changes and early execution", async function () {
    const sys = await loadFixture(deployedSystem);
    await expect(sys.ProtocolParameters.connect(sys.deployer).setParameter(STRATEGY, 0))
      .to.be.revertedWithCustomError(sys.ProtocolParameters, "AccessControlUnauthorizedAccount");
    const gov = sys.FLGovernor;
    const target = await sys.ProtocolParameters.getAddress();
    const call = sys.ProtocolParameters.interface.encodeFunctionData("setParameter", [STRATEGY, 3]);
    await gov.connect(sys.orgs[0]).propose([target], [0n], [call], "Krum");
    const id = await gov.hashProposal([target], [0n], [call], ethers.id("Krum"));
    await mine(2);
    for (const v of sys.orgs.slice(0, 5)) await gov.connect(v).castVote(id, 1);
    await mine(Number(await gov.votingPeriod()) + 1);
    await gov.queue([target], [0n], [call], ethers.id("Krum"));
    await expect(gov.execute([target], [0n], [call], ethers.id("Krum"))).to.be.reverted; // timelock delay
    await time.increase(Number(sys.result.config.timelockDelay) + 1);
    await gov.execute([target], [0n], [call], ethers.id("Krum"));
    expect(await sys.ProtocolParameters.get(STRATEGY)).to.equal(3n);
  });
});
