// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title ProtocolParameters
/// @notice Every governed constant of the platform. Only the timelock (GOVERNOR_ROLE) changes them.
/// @dev Values are uint256. Fractions and real numbers are WAD (1e18 = 1.0); scores are WAD on the 0..100
/// scale; token amounts are token wei; durations are seconds; counts are plain integers. The Python side
/// reads everything in one call with {getAll} and names the entries with {names}.
contract ProtocolParameters is AccessControl {
    bytes32 public constant GOVERNOR_ROLE = keccak256("GOVERNOR_ROLE");

    uint256 internal constant WAD = 1e18;

    /// @notice Index of each parameter in {getAll}. Append only: the order is part of the interface.
    /// @dev Robust aggregation and economics (indices 38..46):
    /// ByzantineFraction: WAD, < 0.5, default 0.3; the one expected Byzantine share, from which the aggregator
    /// derives Krum's f and the trimming of trimmed mean / Bulyan (refused when invalid for the round's n).
    /// SampleWeightCap: WAD, >= 1.0, default 10.0; a client's sample weight is capped at this multiple of the
    /// round's median claimed sample count (a larger claim counts as evidence against it).
    /// CenteredClipTau: WAD clipping radius of centered clipping; 0 (default) chooses it adaptively.
    /// CenteredClipIterations: 1..10, default 3. BucketSize: updates averaged per bucket before robust
    /// aggregation, 1..10, default 2. ServerMomentum: WAD, < 1.0, default 0 (server-side momentum).
    /// EmissionCapPerPeriod: token wei, default 100,000 tokens; rewards recorded in one emission period.
    /// EmissionPeriod: seconds, > 0, default 1 day. DisputeWindow: seconds, default 1 day; a rewards root is
    /// claimable only this long after it is recorded, and cancellable meanwhile.
    enum Param {
        BaseReward, // 0  token wei per round for a 1.0 multiplier
        MinStake, // 1  token wei
        MinReputation, // 2  WAD score
        SlashFraction, // 3  WAD of the stake
        SlashFitnessBelow, // 4  WAD score
        SlashHonestyBelow, // 5  WAD score
        ByzantineThreshold, // 6  detections before slashing
        ActivityTimeout, // 7  seconds
        WeightQuality, // 8  WAD (set with setFitnessWeights)
        WeightTimeliness, // 9  WAD
        WeightHonesty, // 10 WAD
        ReputationInfluenceCap, // 11 WAD
        Strategy, // 12 0 fedavg 1 trimmed_mean 2 median 3 krum 4 multi_krum 5 bulyan 6 reputation 7 fltrust
        // 8 centered_clip
        Weighting, // 13 0 samples 1 fitness 2 hybrid
        TrimFraction, // 14 WAD, < 0.5
        KrumF, // 15 assumed Byzantine count f
        MultiKrumM, // 16 selected count m (0 = n - f)
        DpEnabled, // 17 0 or 1
        DpClipNorm, // 18 WAD
        DpNoiseMultiplier, // 19 WAD
        DpEpsilonBudget, // 20 WAD
        DpDelta, // 21 WAD, in (0, 1)
        RoundDuration, // 22 seconds
        Quorum, // 23 updates that close a round early
        MinParticipants, // 24 fewer at the deadline: the round is extended or failed
        RollbackThreshold, // 25 WAD relative holdout-loss increase that rejects a model
        RoundRewardBudget, // 26 token wei, cap on one round's rewards
        UnbondingPeriod, // 27 seconds between exit request and withdrawal
        Tier1MinFitness, // 28 WAD score
        Tier1Multiplier, // 29 WAD
        Tier2MinFitness, // 30
        Tier2Multiplier, // 31
        Tier3MinFitness, // 32
        Tier3Multiplier, // 33
        Tier4MinFitness, // 34
        Tier4Multiplier, // 35
        ReputationMultiplierBase, // 36 WAD: reward × (base + reputation/100)
        MaxRoundExtensions, // 37 deadline extensions before a short round fails
        ByzantineFraction, // 38 WAD, < 0.5: expected Byzantine share; Krum f and trimming derive from it
        SampleWeightCap, // 39 WAD, >= 1.0: a sample weight is capped at this multiple of the round's median
        CenteredClipTau, // 40 WAD clipping radius of centered clipping (0 = adaptive)
        CenteredClipIterations, // 41 clipping iterations, 1..10
        BucketSize, // 42 updates averaged per bucket before robust aggregation, 1..10
        ServerMomentum, // 43 WAD, < 1.0: server-side momentum of centered clipping
        EmissionCapPerPeriod, // 44 token wei: rewards roots posted in one emission period sum to at most this
        EmissionPeriod, // 45 seconds, > 0: length of an emission period
        DisputeWindow // 46 seconds a rewards root waits before it can be claimed (and can be cancelled)
    }

    /// @dev Equals uint256(type(Param).max) + 1; a literal because array lengths need one (checked in tests).
    uint256 public constant PARAM_COUNT = 47;
    /// @notice Number of aggregation strategies (codes 0..STRATEGY_COUNT-1, see {Param.Strategy}).
    uint256 public constant STRATEGY_COUNT = 9;
    uint256 public constant WEIGHTING_COUNT = 3;

    uint256[PARAM_COUNT] private _values;
    /// @dev RoundRewardBudget (96 bits) | EmissionCapPerPeriod (96) | EmissionPeriod (32) | DisputeWindow (32),
    /// kept in step with {_values} so recording a round reads them with one storage load ({rewardLimits}).
    uint256 private _rewardLimits;

    /// @notice Emitted for every change of a parameter.
    event ParameterChanged(Param indexed param, uint256 oldValue, uint256 newValue);

    /// @notice `value` is outside the range `param` allows; `reason` says which range.
    error InvalidParameter(Param param, uint256 value, string reason);
    /// @notice The three fitness weights must sum to exactly 1.0 (WAD).
    error WeightsMustSumToOne(uint256 quality, uint256 timeliness, uint256 honesty);
    /// @notice The fitness weights change together, through {setFitnessWeights}.
    error UseSetFitnessWeights();

    /// @param governor Receives GOVERNOR_ROLE and DEFAULT_ADMIN_ROLE (the deploy script passes the deployer
    /// and hands both to the timelock before finishing).
    constructor(address governor) {
        _grantRole(DEFAULT_ADMIN_ROLE, governor);
        _grantRole(GOVERNOR_ROLE, governor);
        _init(Param.BaseReward, 100 * WAD);
        _init(Param.MinStake, 100 * WAD);
        _init(Param.MinReputation, 10 * WAD);
        _init(Param.SlashFraction, WAD / 10);
        _init(Param.SlashFitnessBelow, 50 * WAD);
        _init(Param.SlashHonestyBelow, 50 * WAD);
        _init(Param.ByzantineThreshold, 3);
        _init(Param.ActivityTimeout, 7 days);
        _init(Param.WeightQuality, (4 * WAD) / 10);
        _init(Param.WeightTimeliness, (3 * WAD) / 10);
        _init(Param.WeightHonesty, (3 * WAD) / 10);
        _init(Param.ReputationInfluenceCap, (8 * WAD) / 10);
        _init(Param.Strategy, 7); // fltrust: chosen by scripts/attack_eval.py (docs/benchmarks.md)
        _init(Param.Weighting, 0);
        _init(Param.TrimFraction, (2 * WAD) / 10);
        _init(Param.KrumF, 1);
        _init(Param.MultiKrumM, 0);
        _init(Param.DpEnabled, 0);
        _init(Param.DpClipNorm, WAD);
        _init(Param.DpNoiseMultiplier, WAD);
        _init(Param.DpEpsilonBudget, 10 * WAD);
        _init(Param.DpDelta, 1e13); // 1e-5
        _init(Param.RoundDuration, 300);
        _init(Param.Quorum, 3);
        _init(Param.MinParticipants, 3);
        _init(Param.RollbackThreshold, (5 * WAD) / 100);
        _init(Param.RoundRewardBudget, 10_000 * WAD);
        _init(Param.UnbondingPeriod, 3 days);
        _init(Param.Tier1MinFitness, 90 * WAD);
        _init(Param.Tier1Multiplier, 2 * WAD);
        _init(Param.Tier2MinFitness, 80 * WAD);
        _init(Param.Tier2Multiplier, (15 * WAD) / 10);
        _init(Param.Tier3MinFitness, 70 * WAD);
        _init(Param.Tier3Multiplier, WAD);
        _init(Param.Tier4MinFitness, 60 * WAD);
        _init(Param.Tier4Multiplier, WAD / 2);
        _init(Param.ReputationMultiplierBase, WAD / 2);
        _init(Param.MaxRoundExtensions, 2);
        _init(Param.ByzantineFraction, (3 * WAD) / 10);
        _init(Param.SampleWeightCap, 10 * WAD); // Dirichlet(0.1) shards reach 6x the median: 3x flagged honest claims
        _init(Param.CenteredClipTau, 0);
        _init(Param.CenteredClipIterations, 3);
        _init(Param.BucketSize, 1); // bucket_size x byzantine_fraction must stay < 0.5
        _init(Param.ServerMomentum, 0);
        _init(Param.EmissionCapPerPeriod, 100_000 * WAD);
        _init(Param.EmissionPeriod, 1 days);
        _init(Param.DisputeWindow, 1 days);
        _syncRewardLimits();
    }

    /// @notice Change one parameter. Fitness weights change together through {setFitnessWeights}.
    /// @param param Which parameter.
    /// @param value The new value, in the unit the parameter's comment gives.
    function setParameter(Param param, uint256 value) external onlyRole(GOVERNOR_ROLE) {
        if (param == Param.WeightQuality || param == Param.WeightTimeliness || param == Param.WeightHonesty) {
            revert UseSetFitnessWeights();
        }
        _validate(param, value);
        _set(param, value);
    }

    /// @notice Change the three fitness weights at once; they must sum to exactly 1.0 (WAD).
    function setFitnessWeights(uint256 quality, uint256 timeliness, uint256 honesty) external onlyRole(GOVERNOR_ROLE) {
        if (quality + timeliness + honesty != WAD) revert WeightsMustSumToOne(quality, timeliness, honesty);
        _set(Param.WeightQuality, quality);
        _set(Param.WeightTimeliness, timeliness);
        _set(Param.WeightHonesty, honesty);
    }

    /// @notice The value of one parameter.
    function get(Param param) external view returns (uint256) {
        return _values[uint256(param)];
    }

    /// @notice The four parameters the RewardDistributor checks when a root is posted, in one call.
    /// @return roundBudget {Param.RoundRewardBudget}, token wei.
    /// @return emissionCap {Param.EmissionCapPerPeriod}, token wei.
    /// @return emissionPeriod {Param.EmissionPeriod}, seconds.
    /// @return disputeWindow {Param.DisputeWindow}, seconds.
    function rewardLimits()
        external
        view
        returns (uint256 roundBudget, uint256 emissionCap, uint256 emissionPeriod, uint256 disputeWindow)
    {
        uint256 packed = _rewardLimits;
        return (
            packed >> 160,
            (packed >> 64) & type(uint96).max,
            (packed >> 32) & type(uint32).max,
            packed & type(uint32).max
        );
    }

    /// @notice Every parameter, indexed by {Param}.
    function getAll() external view returns (uint256[PARAM_COUNT] memory) {
        return _values;
    }

    /// @notice The names of the parameters in {Param} order, so off-chain readers can check their mapping.
    function names() external pure returns (string[PARAM_COUNT] memory n) {
        n = [
            "base_reward",
            "min_stake",
            "min_reputation",
            "slash_fraction",
            "slash_fitness_below",
            "slash_honesty_below",
            "byzantine_threshold",
            "activity_timeout",
            "weight_quality",
            "weight_timeliness",
            "weight_honesty",
            "reputation_influence_cap",
            "strategy",
            "weighting",
            "trim_fraction",
            "krum_f",
            "multi_krum_m",
            "dp_enabled",
            "dp_clip_norm",
            "dp_noise_multiplier",
            "dp_epsilon_budget",
            "dp_delta",
            "round_duration",
            "quorum",
            "min_participants",
            "rollback_threshold",
            "round_reward_budget",
            "unbonding_period",
            "tier1_min_fitness",
            "tier1_multiplier",
            "tier2_min_fitness",
            "tier2_multiplier",
            "tier3_min_fitness",
            "tier3_multiplier",
            "tier4_min_fitness",
            "tier4_multiplier",
            "reputation_multiplier_base",
            "max_round_extensions",
            "byzantine_fraction",
            "sample_weight_cap",
            "centered_clip_tau",
            "centered_clip_iterations",
            "bucket_size",
            "server_momentum",
            "emission_cap_per_period",
            "emission_period",
            "dispute_window"
        ];
    }

    function _init(Param param, uint256 value) private {
        _values[uint256(param)] = value;
    }

    function _set(Param param, uint256 value) private {
        uint256 old = _values[uint256(param)];
        _values[uint256(param)] = value;
        if (
            param == Param.RoundRewardBudget ||
            param == Param.EmissionCapPerPeriod ||
            param == Param.EmissionPeriod ||
            param == Param.DisputeWindow
        ) _syncRewardLimits();
        emit ParameterChanged(param, old, value);
    }

    function _syncRewardLimits() private {
        _rewardLimits =
            (_values[uint256(Param.RoundRewardBudget)] << 160) |
            (_values[uint256(Param.EmissionCapPerPeriod)] << 64) |
            (_values[uint256(Param.EmissionPeriod)] << 32) |
            _values[uint256(Param.DisputeWindow)];
    }

    function _validate(Param param, uint256 value) private pure {
        if (param == Param.Strategy) {
            if (value >= STRATEGY_COUNT) revert InvalidParameter(param, value, "unknown strategy (0..8)");
        } else if (param == Param.Weighting) {
            if (value >= WEIGHTING_COUNT) revert InvalidParameter(param, value, "unknown weighting (0..2)");
        } else if (param == Param.TrimFraction) {
            if (value >= WAD / 2) revert InvalidParameter(param, value, "trim fraction must be < 0.5");
        } else if (param == Param.RoundRewardBudget || param == Param.EmissionCapPerPeriod) {
            if (value > type(uint96).max) revert InvalidParameter(param, value, "token amount must fit 96 bits");
        } else if (param == Param.DisputeWindow) {
            if (value > type(uint32).max) revert InvalidParameter(param, value, "duration must fit 32 bits");
        } else if (param == Param.ByzantineFraction) {
            if (value >= WAD / 2) revert InvalidParameter(param, value, "byzantine fraction must be < 0.5");
        } else if (param == Param.SampleWeightCap) {
            if (value < WAD) revert InvalidParameter(param, value, "sample weight cap must be >= 1.0");
        } else if (param == Param.CenteredClipIterations || param == Param.BucketSize) {
            if (value == 0 || value > 10) revert InvalidParameter(param, value, "must be in 1..10");
        } else if (param == Param.ServerMomentum) {
            if (value >= WAD) revert InvalidParameter(param, value, "momentum must be < 1.0");
        } else if (param == Param.DpEnabled) {
            if (value > 1) revert InvalidParameter(param, value, "0 or 1");
        } else if (param == Param.DpDelta) {
            if (value == 0 || value >= WAD) revert InvalidParameter(param, value, "delta must be in (0, 1)");
        } else if (param == Param.SlashFraction || param == Param.ReputationInfluenceCap) {
            if (value > WAD) revert InvalidParameter(param, value, "fraction must be <= 1.0");
        } else if (
            param == Param.MinReputation ||
            param == Param.SlashFitnessBelow ||
            param == Param.SlashHonestyBelow ||
            param == Param.Tier1MinFitness ||
            param == Param.Tier2MinFitness ||
            param == Param.Tier3MinFitness ||
            param == Param.Tier4MinFitness
        ) {
            if (value > 100 * WAD) revert InvalidParameter(param, value, "score must be <= 100");
        } else if (
            param == Param.RoundDuration ||
            param == Param.Quorum ||
            param == Param.MinParticipants ||
            param == Param.DpClipNorm ||
            param == Param.DpNoiseMultiplier ||
            param == Param.DpEpsilonBudget ||
            param == Param.ByzantineThreshold
        ) {
            if (value == 0) revert InvalidParameter(param, value, "must be > 0");
        } else if (param == Param.EmissionPeriod) {
            if (value == 0 || value > type(uint32).max) revert InvalidParameter(param, value, "must be in 1..2^32-1");
        }
    }
}
