// Invariant tests (issue 13): random sequences of enroll / add stake / exit / withdraw / slash / record / claim /
// propose / vote, from fixed seeds, checking after every step that
//   - the registry's totalStaked equals the sum of the stakes, and the tokens it holds;
//   - every stake equals what the operations so far leave (none negative, none vanished);
//   - the token supply equals genesis plus what was claimed;
//   - nothing is claimed twice (the claimed flags match, a second claim reverts);
//   - each proposal's tally equals the votes of those who voted on it, each counted once.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-network-helpers");
const { deployedSystem, recordRound, proofFor, WAD } = require("./fixtures");

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STEPS = 120;
const SEEDS = [1, 2, 3];

async function ok(promise) {
  try {
    await (await promise).wait();
    return true;
  } catch (e) {
    if (!/reverted/.test(e.message)) throw e;
    return false;
  }
}

describe("Invariants under random operation sequences", function () {
  for (const seed of SEEDS) {
    it(`seed ${seed}: ${STEPS} steps`, async function () {
      const sys = await loadFixture(deployedSystem);
      const random = rng(seed);
      const pick = (list) => list[Math.floor(random() * list.length)];
      const orgs = sys.orgs.slice(0, 6);
      const reg = sys.ParticipantRegistry;
      const token = sys.RewardToken;
      const gov = sys.FLGovernor;
      const regAddress = await reg.getAddress();
      for (const o of orgs) await token.connect(o).approve(regAddress, ethers.MaxUint256);
      const genesis = await token.totalSupply();
      const stakes = new Map(orgs.map((o) => [o.address, 0n]));
      const leaves = []; // { roundId, tree, account, amount, claimed }
      const proposals = []; // { id, voters: Map(address -> weight) }
      let claimedTotal = 0n;
      const counts = {};

      const actions = {
        async enroll() {
          const o = pick(orgs);
          const amount = 100n * WAD + BigInt(Math.floor(random() * 50)) * WAD;
          if (await ok(reg.connect(o).enroll(amount))) stakes.set(o.address, amount);
          return true;
        },
        async addStake() {
          const o = pick(orgs);
          const amount = BigInt(1 + Math.floor(random() * 20)) * WAD;
          if (await ok(reg.connect(o).addStake(amount))) stakes.set(o.address, stakes.get(o.address) + amount);
          return true;
        },
        async exit() {
          return ok(reg.connect(pick(orgs)).requestExit());
        },
        async withdraw() {
          if (random() < 0.5) await time.increase(3 * 24 * 3600);
          const o = pick(orgs);
          if (await ok(reg.connect(o).withdraw())) stakes.set(o.address, 0n);
          return true;
        },
        async slash() {
          const o = pick(orgs);
          const stake = stakes.get(o.address);
          // Sometimes more than the stake: must revert and change nothing.
          const amount = random() < 0.2 ? stake + 1n : (stake * BigInt(Math.floor(random() * 100))) / 100n;
          if (await ok(reg.connect(sys.aggregator).slash(o.address, amount, ethers.ZeroHash))) {
            stakes.set(o.address, stake - amount);
          } else {
            expect(amount === 0n || amount > stake).to.equal(true);
          }
          return true;
        },
        async record() {
          const members = orgs.filter(() => random() < 0.6);
          if (members.length === 0) return false;
          const rewards = members.map((o) => [o.address, BigInt(1 + Math.floor(random() * 1000)) * WAD / 10n]);
          const roundId = (await sys.ContributionLedger.latestRoundId()) + 1n + BigInt(Math.floor(random() * 3));
          const { tree } = await recordRound(sys, roundId, rewards);
          for (const [account, amount] of rewards) leaves.push({ roundId, tree, account, amount, claimed: false });
          return true;
        },
        async claim() {
          const open = leaves.filter((l) => !l.claimed);
          if (open.length === 0) return false;
          const leaf = pick(open);
          const { proof } = proofFor(leaf.tree, leaf.account);
          await (await sys.RewardDistributor.connect(pick(orgs)).claim(leaf.roundId, leaf.account, leaf.amount, proof)).wait();
          leaf.claimed = true;
          claimedTotal += leaf.amount;
          return true;
        },
        async doubleClaim() {
          const done = leaves.filter((l) => l.claimed);
          if (done.length === 0) return false;
          const leaf = pick(done);
          const { proof } = proofFor(leaf.tree, leaf.account);
          await expect(sys.RewardDistributor.claim(leaf.roundId, leaf.account, leaf.amount, proof))
            .to.be.revertedWithCustomError(sys.RewardDistributor, "AlreadyClaimed");
          return true;
        },
        async propose() {
          const o = pick(orgs);
          const target = await sys.ProtocolParameters.getAddress();
          const description = `seed ${seed} proposal ${proposals.length} ${random()}`;
          const call = sys.ProtocolParameters.interface.encodeFunctionData("setParameter", [23, 1 + Math.floor(random() * 9)]);
          if (!(await ok(gov.connect(o).propose([target], [0n], [call], description)))) return false;
          proposals.push({ id: await gov.hashProposal([target], [0n], [call], ethers.id(description)), voters: new Map() });
          await mine(2); // past the voting delay
          return true;
        },
        async vote() {
          const active = [];
          for (const p of proposals) if ((await gov.state(p.id)) === 1n) active.push(p);
          if (active.length === 0) return false;
          const p = pick(active);
          const o = pick(orgs);
          const support = Math.floor(random() * 3);
          if (await ok(gov.connect(o).castVote(p.id, support))) {
            expect(p.voters.has(o.address)).to.equal(false);
            p.voters.set(o.address, await token.getPastVotes(o.address, await gov.proposalSnapshot(p.id)));
          } else {
            // Only a second vote fails, or a vote mined in the block after the voting period ended.
            expect(p.voters.has(o.address) || (await gov.state(p.id)) !== 1n).to.equal(true);
          }
          return true;
        },
      };
      const names = Object.keys(actions);

      for (let step = 0; step < STEPS; step++) {
        const name = pick(names);
        if (await actions[name]()) counts[name] = (counts[name] || 0) + 1;

        let sum = 0n;
        for (const o of orgs) {
          const onchain = await reg.stakeOf(o.address);
          expect(onchain, `step ${step} ${name}: stake of ${o.address}`).to.equal(stakes.get(o.address));
          sum += onchain;
        }
        expect(await reg.totalStaked(), `step ${step} ${name}: totalStaked`).to.equal(sum);
        expect(await token.balanceOf(regAddress), `step ${step} ${name}: registry balance`).to.equal(sum);
        expect(await token.totalSupply(), `step ${step} ${name}: supply`).to.equal(genesis + claimedTotal);
        for (const l of leaves.slice(-8)) {
          expect(await sys.RewardDistributor.claimed(l.roundId, l.account)).to.equal(l.claimed);
        }
        for (const p of proposals) {
          const v = await gov.proposalVotes(p.id);
          const tally = [...p.voters.values()].reduce((a, b) => a + b, 0n);
          expect(v.againstVotes + v.forVotes + v.abstainVotes, `step ${step}: tally`).to.equal(tally);
        }
      }
      // The sequence exercised every kind of operation.
      for (const name of names) expect(counts[name] || 0, `${name} never ran`).to.be.greaterThan(0);
    });
  }
});
