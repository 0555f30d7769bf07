// Gas figures for blockchain/README.md. They are measurements with a bound that can fail: the amortized
// on-chain cost per participant per round must stay at or under 10k gas from 100 participants up.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, recordRound, proofFor, WAD } = require("./fixtures");

describe("Gas", function () {
  it("recordRound per participant and one claim", async function () {
    const sys = await loadFixture(deployedSystem);
    const rows = [];
    let roundId = 100;
    let lastTree;
    for (const n of [10, 100, 1000]) {
      const rewards = Array.from({ length: n }, (_, i) => [ethers.Wallet.createRandom().address, BigInt(i + 1) * WAD / 100n]);
      rewards[0] = [sys.orgs[0].address, WAD];
      const { tx, tree } = await recordRound(sys, ++roundId, rewards);
      const gas = (await (await tx).wait()).gasUsed;
      rows.push({ participants: n, gas: Number(gas), perParticipant: Math.round(Number(gas) / n) });
      if (n >= 100) expect(Number(gas) / n).to.be.at.most(10_000);
      lastTree = tree;
    }
    const { proof, amount } = proofFor(lastTree, sys.orgs[0].address);
    const claimGas = (await (await sys.RewardDistributor.claim(roundId, sys.orgs[0].address, amount, proof)).wait()).gasUsed;
    console.log("\n      recordRound gas:");
    for (const r of rows) console.log(`        ${String(r.participants).padStart(5)} participants: ${r.gas} total, ${r.perParticipant} per participant`);
    console.log(`      claim gas (1000-leaf tree, proof of ${proof.length}): ${claimGas}`);
  });
});
