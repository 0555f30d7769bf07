const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { WAD } = require("./fixtures");

const { P } = require("../scripts/paramTable");

async function standalone() {
  const [governor, stranger] = await ethers.getSigners();
  const params = await (await ethers.getContractFactory("ProtocolParameters")).deploy(governor.address);
  return { params, governor, stranger };
}

describe("ProtocolParameters", function () {
  it("starts with the architecture's defaults and names every entry", async function () {
    const { params } = await loadFixture(standalone);
    const all = await params.getAll();
    const names = await params.names();
    expect(all.length).to.equal(Number(await params.PARAM_COUNT()));
    expect(names.length).to.equal(all.length);
    expect(new Set(names).size).to.equal(names.length);
    const v = Object.fromEntries(names.map((n, i) => [n, all[i]]));
    expect(v.weight_quality + v.weight_timeliness + v.weight_honesty).to.equal(WAD);
    expect(v.weight_quality).to.equal(4n * WAD / 10n);
    expect(v.reputation_influence_cap).to.equal(8n * WAD / 10n);
    expect(v.byzantine_threshold).to.equal(3n);
    expect(v.tier1_min_fitness).to.equal(90n * WAD);
    expect(v.tier1_multiplier).to.equal(2n * WAD);
    expect(v.tier4_multiplier).to.equal(WAD / 2n);
    expect(v.reserved_4).to.equal(0n);
    expect(v.reserved_5).to.equal(0n);
    expect(await params.get(P.Strategy)).to.equal(v.strategy);
    expect(v.byzantine_fraction).to.equal(3n * WAD / 10n);
    expect(v.sample_weight_cap).to.equal(10n * WAD);
    expect(v.centered_clip_tau).to.equal(0n);
    expect(v.centered_clip_iterations).to.equal(3n);
    expect(v.bucket_size).to.equal(1n);
    expect(v.strategy).to.equal(9n); // fltrust_guarded
    expect(v.server_momentum).to.equal(0n);
    expect(v.emission_cap_per_period).to.equal(100_000n * WAD);
    expect(v.emission_period).to.equal(86_400n);
    expect(v.dispute_window).to.equal(86_400n);
    // Every Param index is named in order (the enum and names() cannot drift apart silently).
    expect(names[P.ByzantineFraction]).to.equal("byzantine_fraction");
    expect(names[P.DisputeWindow]).to.equal("dispute_window");
    await expect(params.get(Number(await params.PARAM_COUNT()))).to.be.reverted;
  });

  it("accepts the new strategies and the boundary values of the robust-aggregation parameters", async function () {
    const { params, governor } = await loadFixture(standalone);
    const ok = [[P.Strategy, 7n], [P.Strategy, 9n], [P.ByzantineFraction, WAD / 2n - 1n], [P.ByzantineFraction, 0n],
      [P.SampleWeightCap, WAD], [P.CenteredClipIterations, 1n], [P.CenteredClipIterations, 10n], [P.BucketSize, 1n],
      [P.BucketSize, 10n], [P.ServerMomentum, WAD - 1n], [P.CenteredClipTau, 5n * WAD], [P.EmissionCapPerPeriod, 0n],
      [P.DisputeWindow, 0n], [P.EmissionPeriod, 1n]];
    for (const [param, value] of ok) {
      await expect(params.connect(governor).setParameter(param, value)).to.emit(params, "ParameterChanged");
      expect(await params.get(param)).to.equal(value);
    }
  });

  it("lets only the governor change a parameter, with an event", async function () {
    const { params, governor, stranger } = await loadFixture(standalone);
    await expect(params.connect(stranger).setParameter(P.BaseReward, 1n))
      .to.be.revertedWithCustomError(params, "AccessControlUnauthorizedAccount");
    await expect(params.connect(governor).setParameter(P.Strategy, 5))
      .to.emit(params, "ParameterChanged").withArgs(P.Strategy, 9n, 5n);
    expect(await params.get(P.Strategy)).to.equal(5n);
  });

  const invalid = [
    ["an unknown strategy", P.Strategy, 10n],
    ["a Byzantine fraction of one half", P.ByzantineFraction, WAD / 2n],
    ["a sample weight cap below 1", P.SampleWeightCap, WAD - 1n],
    ["zero centered-clipping iterations", P.CenteredClipIterations, 0n],
    ["11 centered-clipping iterations", P.CenteredClipIterations, 11n],
    ["a zero bucket size", P.BucketSize, 0n],
    ["a bucket size of 11", P.BucketSize, 11n],
    ["a server momentum of 1", P.ServerMomentum, WAD],
    ["a zero emission period", P.EmissionPeriod, 0n],
    ["an unknown weighting", P.Weighting, 3n],
    ["a trim fraction of one half", P.TrimFraction, WAD / 2n],
    ["dp_enabled other than 0/1", P.DpEnabled, 2n],
    ["a zero delta", P.DpDelta, 0n],
    ["a delta of one", P.DpDelta, WAD],
    ["a slash fraction above 1", P.SlashFraction, WAD + 1n],
    ["a score above 100", P.MinReputation, 100n * WAD + 1n],
    ["a zero reputation influence cap", P.ReputationInfluenceCap, 0n],
    ["a zero quorum", P.Quorum, 0n],
    ["a zero round duration", P.RoundDuration, 0n],
  ];
  for (const [what, param, value] of invalid) {
    it(`refuses ${what}`, async function () {
      const { params, governor } = await loadFixture(standalone);
      await expect(params.connect(governor).setParameter(param, value))
        .to.be.revertedWithCustomError(params, "InvalidParameter");
    });
  }

  it("refuses the retired slots and reports a range's bounds", async function () {
    const { params, governor } = await loadFixture(standalone);
    for (const slot of [P.Reserved4, P.Reserved5]) {
      await expect(params.connect(governor).setParameter(slot, 0n))
        .to.be.revertedWithCustomError(params, "ReservedParameter").withArgs(slot);
    }
    await expect(params.connect(governor).setParameter(P.BucketSize, 11n))
      .to.be.revertedWithCustomError(params, "InvalidParameter").withArgs(P.BucketSize, 11n, 1n, 10n);
  });

  it("changes fitness weights only together and only summing to one", async function () {
    const { params, governor, stranger } = await loadFixture(standalone);
    for (const p of [P.WeightQuality, P.WeightTimeliness, P.WeightHonesty]) {
      await expect(params.connect(governor).setParameter(p, WAD)).to.be.revertedWithCustomError(params, "UseSetFitnessWeights");
    }
    await expect(params.connect(governor).setFitnessWeights(WAD / 2n, WAD / 4n, WAD / 2n))
      .to.be.revertedWithCustomError(params, "WeightsMustSumToOne");
    await expect(params.connect(stranger).setFitnessWeights(WAD / 2n, WAD / 4n, WAD / 4n))
      .to.be.revertedWithCustomError(params, "AccessControlUnauthorizedAccount");
    await expect(params.connect(governor).setFitnessWeights(WAD / 2n, WAD / 4n, WAD / 4n))
      .to.emit(params, "ParameterChanged").withArgs(P.WeightQuality, 4n * WAD / 10n, WAD / 2n);
    expect(await params.get(P.WeightHonesty)).to.equal(WAD / 4n);
  });
});

describe("ProtocolParameters: every parameter's bounds", function () {
  // [index, a valid value, invalid values...]; fitness weights (8..10) change only with setFitnessWeights.
  const W = WAD;
  const table = [
    [0, 5n * W], [1, 50n * W], [2, 20n * W, 100n * W + 1n], [3, W / 5n, W + 1n], [6, 2n, 0n], [7, 3600n], [11, W / 2n, W + 1n], [12, 9n, 10n], [13, 2n, 3n],
    [14, W / 4n, W / 2n], [15, 2n], [16, 3n], [17, 1n, 2n], [18, 2n * W, 0n], [19, W / 2n, 0n], [20, 5n * W, 0n],
    [21, 10n ** 12n, 0n, W], [22, 60n, 0n], [23, 2n, 0n], [24, 2n, 0n], [25, W / 10n], [26, 5_000n * W, 2n ** 96n],
    [27, 86_400n], [28, 95n * W, 100n * W + 1n], [29, 3n * W], [30, 85n * W, 100n * W + 1n], [31, 2n * W],
    [32, 75n * W, 100n * W + 1n], [33, W], [34, 65n * W, 100n * W + 1n], [35, W / 4n], [36, W / 4n], [37, 4n],
    [38, W / 4n, W / 2n], [39, 2n * W, W - 1n], [40, 3n * W], [41, 5n, 0n, 11n], [42, 4n, 0n, 11n],
    [43, W / 2n, W], [44, 50_000n * W, 2n ** 96n], [45, 3600n, 0n, 2n ** 32n], [46, 7200n, 2n ** 32n],
  ];

  it("covers every settable parameter", async function () {
    const covered = new Set(table.map(([i]) => i));
    for (let i = 0; i < 47; i++) if (![4, 5, 8, 9, 10].includes(i)) expect(covered.has(i), `parameter ${i}`).to.equal(true);
  });

  for (const [index, ok, ...bad] of table) {
    it(`parameter ${index}: accepts ${ok} and refuses ${bad.join(", ") || "nothing"}`, async function () {
      const { params, governor } = await loadFixture(standalone);
      await expect(params.connect(governor).setParameter(index, ok)).to.emit(params, "ParameterChanged");
      expect(await params.get(index)).to.equal(ok);
      for (const value of bad) {
        await expect(params.connect(governor).setParameter(index, value))
          .to.be.revertedWithCustomError(params, "InvalidParameter");
      }
    });
  }

  it("keeps the packed reward limits in step with the parameters", async function () {
    const { params, governor } = await loadFixture(standalone);
    expect(await params.rewardLimits()).to.deep.equal([10_000n * WAD, 100_000n * WAD, 86_400n, 86_400n]);
    await params.connect(governor).setParameter(26, 7n * WAD);
    await params.connect(governor).setParameter(44, 2n ** 96n - 1n);
    await params.connect(governor).setParameter(45, 2n ** 32n - 1n);
    await params.connect(governor).setParameter(46, 5n);
    expect(await params.rewardLimits()).to.deep.equal([7n * WAD, 2n ** 96n - 1n, 2n ** 32n - 1n, 5n]);
  });
});
