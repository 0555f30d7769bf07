// Gas figures for blockchain/README.md (issue 14.4), printed by `npm run gas`. Measurements with bounds that can
// fail: recordRound at most 12k gas per participant at 10 participants and 5k at 100; a claim of several rounds
// at most 100k per round; markActive at most 11k per participant, a slash or its execution 110k (issue 21). A
// single claim is bounded at 140k: most of it is the token's mint (ERC20Votes writes two vote checkpoints), see
// README.md.
const { expect } = require("chai");
const hre = require("hardhat");
const { ethers } = hre;
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, recordRound, proofFor, enroll, WAD } = require("./fixtures");

const LIMITS = { 10: 12_000, 100: 5_000 };

describe("Gas", function () {
  it("recordRound per participant and claims", async function () {
    // Instrumented bytecode costs more gas: the figures and bounds hold for the real contracts only.
    if (hre.__SOLIDITY_COVERAGE_RUNNING) this.skip();
    const sys = await loadFixture(deployedSystem);
    const rows = [];
    let roundId = 100;
    const trees = {};
    // Round 100 warms the counters as a running platform has them.
    await recordRound(sys, roundId, [[sys.orgs[1].address, WAD]]);
    for (const n of [10, 100, 1000]) {
      const rewards = Array.from({ length: n }, (_, i) => [ethers.Wallet.createRandom().address, BigInt(i + 1) * WAD / 100n]);
      rewards[0] = [sys.orgs[0].address, WAD];
      rewards[1] = [sys.orgs[1].address, WAD];
      const { tx, tree } = await recordRound(sys, ++roundId, rewards);
      const gas = Number((await (await tx).wait()).gasUsed);
      rows.push({ participants: n, gas, perParticipant: Math.round(gas / n) });
      trees[n] = { roundId, tree };
    }
    const claims = [];
    const claim = async (label, n, who) => {
      const { roundId: r, tree } = trees[n];
      const { proof, amount } = proofFor(tree, who.address);
      const gas = Number((await (await sys.RewardDistributor.claim(r, who.address, amount, proof)).wait()).gasUsed);
      claims.push({ label: `${label} (${n}-leaf tree, proof of ${proof.length})`, gas });
      return gas;
    };
    // An organization's first claim ever writes a fresh claimed-bitmap word; later ones reuse it.
    await claim("first claim of an organization", 10, sys.orgs[0]);
    const single = [await claim("claim", 100, sys.orgs[0]), await claim("claim", 1000, sys.orgs[0])];
    await claim("first claim of an organization", 1000, sys.orgs[1]);
    // claimMany: four 100-participant rounds for one organization, one mint.
    const many = [];
    for (let i = 0; i < 4; i++) {
      const rewards = Array.from({ length: 100 }, (_, j) => [ethers.Wallet.createRandom().address, WAD]);
      rewards[0] = [sys.orgs[2].address, WAD];
      const { tree } = await recordRound(sys, ++roundId, rewards);
      many.push({ roundId, ...proofFor(tree, sys.orgs[2].address) });
    }
    const manyGas = Number((await (await sys.RewardDistributor.claimMany(many.map((m) => m.roundId), sys.orgs[2].address,
      many.map((m) => m.amount), many.map((m) => m.proof))).wait()).gasUsed);
    console.log("\n      recordRound gas:");
    for (const r of rows) console.log(`        ${String(r.participants).padStart(5)} participants: ${r.gas} total, ${r.perParticipant} per participant`);
    for (const c of claims) console.log(`      ${c.label}: ${c.gas}`);
    console.log(`      claimMany of 4 rounds (100-leaf trees): ${manyGas} total, ${Math.round(manyGas / 4)} per round`);
    for (const r of rows) if (LIMITS[r.participants]) expect(r.perParticipant, `${r.participants} participants`).to.be.at.most(LIMITS[r.participants]);
    for (const g of single) expect(g).to.be.at.most(140_000);
    expect(manyGas / 4).to.be.at.most(100_000);
  });

  it("slashes (prompt part, queued part, execution) and participation marks", async function () {
    if (hre.__SOLIDITY_COVERAGE_RUNNING) this.skip();
    const sys = await loadFixture(deployedSystem);
    const reg = sys.ParticipantRegistry.connect(sys.aggregator);
    const orgs = sys.orgs.slice(0, 10);
    for (const o of orgs) await enroll(sys, o);
    const gas = async (tx) => Number((await (await tx).wait()).gasUsed);
    const reason = ethers.id("fedledger:round:1:byzantine");
    // Issue 21: a round's close marks its participants (lastActiveAt and lastRound, one slot each).
    const mark = await gas(reg.markActive(1, orgs.map((o) => o.address)));
    const prompt = await gas(reg.slash(orgs[0].address, 10n * WAD, reason));
    const both = await gas(reg.slash(orgs[1].address, 50n * WAD, reason));
    const queued = await gas(reg.slash(orgs[1].address, 10n * WAD, reason));
    await hre.network.provider.send("evm_increaseTime", [Number(await reg.slashDelay())]);
    const execute = await gas(reg.executeSlash(orgs[1].address));
    console.log(`      markActive of 10 participants: ${mark} total, ${Math.round(mark / 10)} per participant`);
    console.log(`      slash, prompt only: ${prompt}; prompt and queued: ${both}; queued only: ${queued}; executeSlash: ${execute}`);
    expect(mark / 10).to.be.at.most(11_000);
    for (const g of [prompt, both, execute]) expect(g).to.be.at.most(110_000);
    expect(queued).to.be.at.most(60_000);
  });
});
