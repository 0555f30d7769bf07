// Invariant tests (issues 13 and 21): random sequences of enroll / add stake / exit / withdraw / slash (prompt part
// and pending part) / execute and cancel pending slashes / suspend and reinstate / mark participation / record /
// claim / cancel rewards / propose / vote / time travel, from fixed seeds, on a deployment with a dispute window, a
// guardian and an emission cap small enough to bind, checking after every step that
//   - the registry's totalStaked equals the sum of the stakes, and the tokens it holds;
//   - every stake and every pending slash equals what the operations so far leave (a slash takes at most
//     promptSlashBps of the stake at once, once per slash delay; the rest waits and is capped at the stake);
//   - no withdrawal happens with a slash pending or before the round the organization last took part in is
//     recorded;
//   - activeCount equals the number of Active participants;
//   - the token supply equals genesis plus what was claimed, and nothing of a cancelled round is claimable;
//   - no window of one emission period holds more recorded rewards than the cap;
//   - nothing is claimed twice (the claimed flags match, a second claim reverts);
//   - each proposal's tally equals the votes of those who voted on it, each counted once.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-network-helpers");
const { deploySystem, recordRound, proofFor, WAD } = require("./fixtures");

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

const STEPS = 150;
const SEEDS = [1, 2, 3];
const CAP = 1_500n * WAD;
const PERIOD = 86_400n;
const WINDOW = 3_600n;
const Status = { None: 0n, Active: 1n, Suspended: 2n, Slashed: 3n, Exited: 4n };

/** Dispute window one hour, the deploy's default guardian, a cap a few rounds reach. */
async function invariantSystem() {
  return deploySystem({ disputeWindow: WINDOW, emissionCapPerPeriod: CAP });
}

async function ok(promise) {
  try {
    const receipt = await (await promise).wait();
    return (await ethers.provider.getBlock(receipt.blockNumber)).timestamp;
  } catch (e) {
    if (!/reverted/.test(e.message)) throw e;
    return 0;
  }
}

describe("Invariants under random operation sequences", function () {
  for (const seed of SEEDS) {
    it(`seed ${seed}: ${STEPS} steps`, async function () {
      const sys = await loadFixture(invariantSystem);
      const random = rng(seed);
      const pick = (list) => list[Math.floor(random() * list.length)];
      const orgs = sys.orgs.slice(0, 6);
      const reg = sys.ParticipantRegistry;
      const ledger = sys.ContributionLedger;
      const token = sys.RewardToken;
      const gov = sys.FLGovernor;
      const regAddress = await reg.getAddress();
      const delay = await reg.slashDelay();
      const bps = await reg.promptSlashBps();
      for (const o of orgs) await token.connect(o).approve(regAddress, ethers.MaxUint256);
      const genesis = await token.totalSupply();
      const model = new Map(orgs.map((o) => [o.address, { stake: 0n, pending: 0n, executableAt: 0n, lastPrompt: 0n, lastRound: 0n }]));
      const leaves = []; // { roundId, tree, account, amount, claimed }
      const recorded = []; // { at, total } of every round that paid rewards
      const cancelled = new Set();
      const proposals = []; // { id, voters: Map(address -> weight) }
      let claimedTotal = 0n;
      const counts = {};
      const travelTo = async (t) => {
        if (BigInt(await time.latest()) < t) await time.increaseTo(t);
      };

      const actions = {
        async enroll() {
          const o = pick(orgs);
          const amount = 100n * WAD + BigInt(Math.floor(random() * 50)) * WAD;
          if (await ok(reg.connect(o).enroll(amount))) Object.assign(model.get(o.address), { stake: amount, lastRound: 0n });
          return true;
        },
        async addStake() {
          const o = pick(orgs);
          const amount = BigInt(1 + Math.floor(random() * 20)) * WAD;
          if (await ok(reg.connect(o).addStake(amount))) model.get(o.address).stake += amount;
          return true;
        },
        async exit() {
          return Boolean(await ok(reg.connect(pick(orgs)).requestExit()));
        },
        async withdraw() {
          if (random() < 0.5) await time.increase(3 * 24 * 3600);
          const o = pick(orgs);
          const m = model.get(o.address);
          if (await ok(reg.connect(o).withdraw())) {
            expect(m.pending, "withdrew with a slash pending").to.equal(0n);
            if (m.lastRound > 0n && (await reg.participantOf(o.address)).unlockRound <= m.lastRound) {
              expect(await ledger.isRecorded(m.lastRound), "withdrew before its last round was recorded").to.equal(true);
            }
            m.stake = 0n;
          }
          return true;
        },
        async slash() {
          const o = pick(orgs);
          const m = model.get(o.address);
          // Sometimes more than the stake: must revert and change nothing.
          const amount = random() < 0.2 ? m.stake + 1n : (m.stake * BigInt(Math.floor(random() * 100))) / 100n;
          const at = BigInt(await ok(reg.connect(sys.aggregator).slash(o.address, amount, ethers.ZeroHash)));
          if (!at) {
            expect(amount === 0n || amount > m.stake).to.equal(true);
            return true;
          }
          let prompt = at >= m.lastPrompt + delay ? (m.stake * bps) / 10_000n : 0n;
          if (prompt > amount) prompt = amount;
          if (amount > prompt) {
            m.pending += amount - prompt;
            if (m.pending > m.stake - prompt) m.pending = m.stake - prompt;
            m.executableAt = at + delay;
          }
          if (prompt > 0n) {
            m.lastPrompt = at;
            m.stake -= prompt;
          }
          return true;
        },
        async executeSlash() {
          const o = pick(orgs.filter((x) => model.get(x.address).pending > 0n).concat(orgs.slice(0, 1)));
          const m = model.get(o.address);
          if (m.pending > 0n && random() < 0.6) await travelTo(m.executableAt);
          if (await ok(reg.executeSlash(o.address))) {
            m.stake -= m.pending < m.stake ? m.pending : m.stake;
            m.pending = 0n;
          } else {
            expect(m.pending === 0n || BigInt(await time.latest()) + 1n < m.executableAt).to.equal(true);
          }
          return true;
        },
        async cancelSlash() {
          if (!orgs.some((x) => model.get(x.address).pending > 0n)) await actions.slash(); // something to cancel
          const candidates = orgs.filter((x) => model.get(x.address).pending > 0n);
          if (candidates.length === 0) return false;
          // Mostly one still in its window.
          const now = BigInt(await time.latest());
          const open = candidates.filter((x) => model.get(x.address).executableAt > now + 1n);
          const o = pick(open.length > 0 && random() < 0.7 ? open : candidates);
          const m = model.get(o.address);
          if (await ok(reg.connect(sys.guardian).cancelSlashes([o.address], ethers.ZeroHash))) {
            m.pending = 0n;
          } else {
            expect(BigInt(await time.latest()) + 1n >= m.executableAt).to.equal(true);
          }
          return true;
        },
        async suspendOrReinstate() {
          const o = pick(orgs);
          if (random() < 0.5) await ok(reg.connect(sys.aggregator).suspend(o.address));
          else await ok(reg.connect(sys.guardian).reinstate(o.address));
          return true;
        },
        async markActive() {
          const members = orgs.filter(() => random() < 0.5);
          if (members.length === 0) return false;
          const roundId = (await ledger.latestRoundId()) + 1n + BigInt(Math.floor(random() * 2));
          if (await ok(reg.connect(sys.aggregator).markActive(roundId, members.map((o) => o.address)))) {
            for (const o of members) {
              const m = model.get(o.address);
              if (roundId > m.lastRound) m.lastRound = roundId;
            }
          }
          return true;
        },
        async record() {
          const members = orgs.filter(() => random() < 0.6);
          if (members.length === 0) return false;
          const rewards = members.map((o) => [o.address, BigInt(1 + Math.floor(random() * 3000)) * WAD / 10n]);
          const total = rewards.reduce((a, [, v]) => a + v, 0n);
          const roundId = (await ledger.latestRoundId()) + 1n + BigInt(Math.floor(random() * 3));
          try {
            const { tree, tx } = await recordRound(sys, roundId, rewards);
            const at = BigInt((await ethers.provider.getBlock((await tx.wait()).blockNumber)).timestamp);
            recorded.push({ at, total });
            for (const [account, amount] of rewards) leaves.push({ roundId, tree, account, amount, claimed: false });
            const inWindow = recorded.filter((r) => r.at > at - PERIOD).reduce((a, r) => a + r.total, 0n);
            expect(inWindow, "recorded in one emission period").to.be.at.most(CAP);
          } catch (e) {
            expect(e.message).to.contain("EmissionCapExceeded");
          }
          return true;
        },
        async claim() {
          const open = leaves.filter((l) => !l.claimed && !cancelled.has(l.roundId));
          if (open.length === 0) return false;
          const leaf = pick(open);
          const claimableAt = (await ledger.roundOf(leaf.roundId)).claimableAt;
          await travelTo(claimableAt);
          const { proof } = proofFor(leaf.tree, leaf.account);
          await (await sys.RewardDistributor.connect(pick(orgs)).claim(leaf.roundId, leaf.account, leaf.amount, proof)).wait();
          leaf.claimed = true;
          claimedTotal += leaf.amount;
          return true;
        },
        async cancelRewards() {
          const open = leaves.filter((l) => !l.claimed && !cancelled.has(l.roundId));
          if (open.length === 0) return false;
          // Mostly the newest root: the one likely still in its window.
          const leaf = random() < 0.7 ? open[open.length - 1] : pick(open);
          if (await ok(sys.ContributionLedger.connect(sys.guardian).cancelRewards(leaf.roundId, ethers.ZeroHash))) {
            cancelled.add(leaf.roundId);
          } else {
            expect(BigInt(await time.latest())).to.be.at.least((await ledger.roundOf(leaf.roundId)).claimableAt);
          }
          return true;
        },
        async claimCancelled() {
          const gone = leaves.filter((l) => cancelled.has(l.roundId));
          if (gone.length === 0) return false;
          const leaf = pick(gone);
          await travelTo((await ledger.roundOf(leaf.roundId)).claimableAt + 1n);
          const { proof } = proofFor(leaf.tree, leaf.account);
          await expect(sys.RewardDistributor.claim(leaf.roundId, leaf.account, leaf.amount, proof))
            .to.be.revertedWithCustomError(ledger, "RewardsAreCancelled");
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
        async travel() {
          await time.increase(Math.floor(random() * 12 * 3600));
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
        let active = 0n;
        for (const o of orgs) {
          const m = model.get(o.address);
          const onchain = await reg.participantOf(o.address);
          expect(onchain.stake, `step ${step} ${name}: stake of ${o.address}`).to.equal(m.stake);
          expect((await reg.pendingSlashOf(o.address)).amount, `step ${step} ${name}: pending of ${o.address}`).to.equal(m.pending);
          expect(onchain.lastRound, `step ${step} ${name}: last round of ${o.address}`).to.equal(m.lastRound);
          if (onchain.status === Status.Active) active += 1n;
          sum += m.stake;
        }
        expect(await reg.totalStaked(), `step ${step} ${name}: totalStaked`).to.equal(sum);
        expect(await token.balanceOf(regAddress), `step ${step} ${name}: registry balance`).to.equal(sum);
        expect(await reg.activeCount(), `step ${step} ${name}: activeCount`).to.equal(active);
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
      console.log(`      seed ${seed}: ${JSON.stringify(counts)}`);
      // The sequence exercised every kind of operation.
      for (const name of names) expect(counts[name] || 0, `${name} never ran`).to.be.greaterThan(0);
    });
  }
});
