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

    // <generated:param-declarations> by scripts/genParams.js from fedledger/chain/param_table.json
    /// @notice Index of each parameter in {getAll}. Append only: the order is part of the interface.
    /// @dev Generated from fedledger/chain/param_table.json (units, defaults, ranges, meanings).
    enum Param {
        BaseReward, // 0 token wei; reward of one round for a 1.0 multiplier
        MinStake, // 1 token wei; stake an organization must bond to take part
        MinReputation, // 2 WAD score 0..100; reputation below which an organization's updates are excluded
        SlashFraction, // 3 WAD; share of the stake a slash takes
        Reserved4, // 4 reserved; retired slash_fitness_below (read by nothing)
        Reserved5, // 5 reserved; retired slash_honesty_below (read by nothing)
        ByzantineThreshold, // 6 count; Byzantine detections before an organization is slashed
        ActivityTimeout, // 7 seconds; silence after which a participant counts as inactive (7 days)
        WeightQuality, // 8 WAD; weight of quality in the fitness score
        WeightTimeliness, // 9 WAD; weight of timeliness in the fitness score
        WeightHonesty, // 10 WAD; weight of honesty in the fitness score
        ReputationInfluenceCap, // 11 WAD; largest share of the aggregate one organization can weigh under reputation weighting
        Strategy, // 12 0 fedavg 1 trimmed_mean 2 median 3 krum 4 multi_krum 5 bulyan 6 reputation 7 fltrust 8 centered_clip 9 fltrust_guarded; aggregation rule (genesis fltrust_guarded: chosen by scripts/attack_eval.py, docs/benchmarks.md)
        Weighting, // 13 0 samples 1 fitness 2 hybrid; what weighs a client's update in the weighted rules
        TrimFraction, // 14 WAD; share trimmed at each end by trimmed mean when no Byzantine fraction is governed
        KrumF, // 15 count; assumed Byzantine count f of the Krum family when no Byzantine fraction is governed
        MultiKrumM, // 16 count; updates Multi-Krum selects (0 = n - f)
        DpEnabled, // 17 0 or 1; differential privacy of the aggregate on or off
        DpClipNorm, // 18 WAD; L2 norm each update is clipped to under differential privacy
        DpNoiseMultiplier, // 19 WAD; Gaussian noise standard deviation, in clip norms
        DpEpsilonBudget, // 20 WAD; total privacy budget epsilon; rounds stop once it is spent
        DpDelta, // 21 WAD; privacy parameter delta
        RoundDuration, // 22 seconds; time from a round's opening to its deadline
        Quorum, // 23 count; fewest updates the deadline close aggregates; never closes a round early
        MinParticipants, // 24 count; fewer updates at the deadline: the round is extended or fails
        RollbackThreshold, // 25 WAD; relative holdout-loss rise above which a new model is refused (0: any rise)
        RoundRewardBudget, // 26 token wei; cap on one round's rewards
        UnbondingPeriod, // 27 seconds; time between an exit request and the stake's withdrawal (3 days)
        Tier1MinFitness, // 28 WAD score 0..100; fitness that earns reward tier 1
        Tier1Multiplier, // 29 WAD; reward multiplier of tier 1
        Tier2MinFitness, // 30 WAD score 0..100; fitness that earns reward tier 2
        Tier2Multiplier, // 31 WAD; reward multiplier of tier 2
        Tier3MinFitness, // 32 WAD score 0..100; fitness that earns reward tier 3
        Tier3Multiplier, // 33 WAD; reward multiplier of tier 3
        Tier4MinFitness, // 34 WAD score 0..100; fitness that earns reward tier 4
        Tier4Multiplier, // 35 WAD; reward multiplier of tier 4
        ReputationMultiplierBase, // 36 WAD; reward x (base + reputation / 100)
        MaxRoundExtensions, // 37 count; deadline extensions before a short round fails
        ByzantineFraction, // 38 WAD; expected Byzantine share; Krum's f and the trimming of trimmed mean and Bulyan derive from it
        SampleWeightCap, // 39 WAD; a claimed sample count weighs at most this multiple of the round's median claim (Dirichlet(0.1) shards reach 6x)
        CenteredClipTau, // 40 WAD; clipping radius of centered clipping (0 = adaptive)
        CenteredClipIterations, // 41 count; clipping iterations of centered clipping
        BucketSize, // 42 count; updates averaged per bucket before robust aggregation (x byzantine_fraction must stay < 0.5)
        ServerMomentum, // 43 WAD; server-side momentum of centered clipping
        EmissionCapPerPeriod, // 44 token wei; rewards roots posted in one emission period sum to at most this
        EmissionPeriod, // 45 seconds; length of an emission period (1 day)
        DisputeWindow, // 46 seconds; time a rewards root waits before it can be claimed, and can be cancelled (1 day)
        MaxPostingBacklog, // 47 count; aggregated rounds that may wait for their on-chain record before the API refuses to open another
        SecureGroupSize, // 48 count; secure aggregation's group size s (0: the clear mode; 1 and 2 are refused at the close: a pair's sum reveals each update to the other); groups hold s to 2s - 1 members
        SecureClip // 49 WAD; secure aggregation: each update coordinate is clipped to [-clip, clip] before it is quantized and masked
    }

    /// @notice Number of parameters (uint256(type(Param).max) + 1; a literal because array lengths need one).
    uint256 public constant PARAM_COUNT = 50;
    /// @dev Bit i set: parameter i is a retired slot that nothing reads; setParameter refuses it.
    uint256 private constant RESERVED = (1 << uint256(Param.Reserved4)) | (1 << uint256(Param.Reserved5));
    /// @dev Bit i set: parameter i changes only through {setFitnessWeights}.
    uint256 private constant FITNESS_WEIGHTS =
        (1 << uint256(Param.WeightQuality)) |
            (1 << uint256(Param.WeightTimeliness)) |
            (1 << uint256(Param.WeightHonesty));
    // </generated:param-declarations>

    uint256[PARAM_COUNT] private _values;
    /// @dev RoundRewardBudget (96 bits) | EmissionCapPerPeriod (96) | EmissionPeriod (32) | DisputeWindow (32),
    /// kept in step with {_values} so recording a round reads them with one storage load ({rewardLimits}).
    uint256 private _rewardLimits;

    /// @notice Emitted for every change of a parameter.
    event ParameterChanged(Param indexed param, uint256 oldValue, uint256 newValue);

    /// @notice `value` is outside the range `param` allows, [`min`, `max`] on chain (the table's range).
    error InvalidParameter(Param param, uint256 value, uint256 min, uint256 max);
    /// @notice `param` is a retired slot: nothing reads it, so governance cannot set it.
    error ReservedParameter(Param param);
    /// @notice The three fitness weights must sum to exactly 1.0 (WAD).
    error WeightsMustSumToOne(uint256 quality, uint256 timeliness, uint256 honesty);
    /// @notice The fitness weights change together, through {setFitnessWeights}.
    error UseSetFitnessWeights();

    /// @param governor Receives GOVERNOR_ROLE and DEFAULT_ADMIN_ROLE (the deploy script passes the deployer
    /// and hands both to the timelock before finishing).
    constructor(address governor) {
        _grantRole(DEFAULT_ADMIN_ROLE, governor);
        _grantRole(GOVERNOR_ROLE, governor);
        _initGenesis();
        _syncRewardLimits();
    }

    /// @notice Change one parameter. Fitness weights change together through {setFitnessWeights}.
    /// @param param Which parameter.
    /// @param value The new value, in the unit the parameter's comment gives.
    function setParameter(Param param, uint256 value) external onlyRole(GOVERNOR_ROLE) {
        uint256 bit = 1 << uint256(param);
        if (bit & FITNESS_WEIGHTS != 0) revert UseSetFitnessWeights();
        if (bit & RESERVED != 0) revert ReservedParameter(param);
        (uint256[PARAM_COUNT] memory lo, uint256[PARAM_COUNT] memory hi) = _bounds();
        if (value < lo[uint256(param)] || value > hi[uint256(param)]) {
            revert InvalidParameter(param, value, lo[uint256(param)], hi[uint256(param)]);
        }
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

    // <generated:param-functions> by scripts/genParams.js from fedledger/chain/param_table.json
    /// @dev The genesis values (zero where not set).
    function _initGenesis() private {
        _values[uint256(Param.BaseReward)] = 100e18; // 100
        _values[uint256(Param.MinStake)] = 100e18; // 100
        _values[uint256(Param.MinReputation)] = 10e18; // 10
        _values[uint256(Param.SlashFraction)] = 0.1e18; // 0.1
        _values[uint256(Param.ByzantineThreshold)] = 3; // 3
        _values[uint256(Param.ActivityTimeout)] = 604800; // 604800
        _values[uint256(Param.WeightQuality)] = 0.4e18; // 0.4
        _values[uint256(Param.WeightTimeliness)] = 0.3e18; // 0.3
        _values[uint256(Param.WeightHonesty)] = 0.3e18; // 0.3
        _values[uint256(Param.ReputationInfluenceCap)] = 0.8e18; // 0.8
        _values[uint256(Param.Strategy)] = 9; // fltrust_guarded
        _values[uint256(Param.TrimFraction)] = 0.2e18; // 0.2
        _values[uint256(Param.KrumF)] = 1; // 1
        _values[uint256(Param.DpClipNorm)] = 1e18; // 1
        _values[uint256(Param.DpNoiseMultiplier)] = 1e18; // 1
        _values[uint256(Param.DpEpsilonBudget)] = 10e18; // 10
        _values[uint256(Param.DpDelta)] = 0.00001e18; // 0.00001
        _values[uint256(Param.RoundDuration)] = 300; // 300
        _values[uint256(Param.Quorum)] = 3; // 3
        _values[uint256(Param.MinParticipants)] = 3; // 3
        _values[uint256(Param.RoundRewardBudget)] = 10000e18; // 10000
        _values[uint256(Param.UnbondingPeriod)] = 259200; // 259200
        _values[uint256(Param.Tier1MinFitness)] = 90e18; // 90
        _values[uint256(Param.Tier1Multiplier)] = 2e18; // 2
        _values[uint256(Param.Tier2MinFitness)] = 80e18; // 80
        _values[uint256(Param.Tier2Multiplier)] = 1.5e18; // 1.5
        _values[uint256(Param.Tier3MinFitness)] = 70e18; // 70
        _values[uint256(Param.Tier3Multiplier)] = 1e18; // 1
        _values[uint256(Param.Tier4MinFitness)] = 60e18; // 60
        _values[uint256(Param.Tier4Multiplier)] = 0.5e18; // 0.5
        _values[uint256(Param.ReputationMultiplierBase)] = 0.5e18; // 0.5
        _values[uint256(Param.MaxRoundExtensions)] = 2; // 2
        _values[uint256(Param.ByzantineFraction)] = 0.3e18; // 0.3
        _values[uint256(Param.SampleWeightCap)] = 10e18; // 10
        _values[uint256(Param.CenteredClipIterations)] = 3; // 3
        _values[uint256(Param.BucketSize)] = 1; // 1
        _values[uint256(Param.EmissionCapPerPeriod)] = 100000e18; // 100000
        _values[uint256(Param.EmissionPeriod)] = 86400; // 86400
        _values[uint256(Param.DisputeWindow)] = 86400; // 86400
        _values[uint256(Param.MaxPostingBacklog)] = 2; // 2
        _values[uint256(Param.SecureClip)] = 1e18; // 1
    }

    /// @notice The names of the parameters in {Param} order, so off-chain readers can check their mapping.
    // Generated, one name per line: it grows with the table past a hand-written function's length.
    // solhint-disable-next-line function-max-lines
    function names() external pure returns (string[PARAM_COUNT] memory n) {
        n = [
            "base_reward",
            "min_stake",
            "min_reputation",
            "slash_fraction",
            "reserved_4",
            "reserved_5",
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
            "dispute_window",
            "max_posting_backlog",
            "secure_group_size",
            "secure_clip"
        ];
    }

    /// @dev Inclusive bounds of every parameter's on-chain value, indexed by {Param}.
    // A generated table, one line per parameter: longer than a hand-written function may be.
    // solhint-disable-next-line function-max-lines
    function _bounds() private pure returns (uint256[PARAM_COUNT] memory lo, uint256[PARAM_COUNT] memory hi) {
        lo = [
            uint256(0),
            0,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1e18,
            0,
            1,
            1,
            0,
            0,
            1,
            0,
            0,
            0,
            1
        ];
        hi = [
            uint256(type(uint256).max),
            type(uint256).max,
            100e18,
            1e18,
            0,
            0,
            type(uint256).max,
            type(uint256).max,
            1e18,
            1e18,
            1e18,
            1e18,
            9,
            2,
            0.5e18 - 1,
            type(uint256).max,
            type(uint256).max,
            1,
            type(uint256).max,
            type(uint256).max,
            type(uint256).max,
            1e18 - 1,
            type(uint256).max,
            type(uint256).max,
            type(uint256).max,
            type(uint256).max,
            type(uint96).max,
            type(uint256).max,
            100e18,
            type(uint256).max,
            100e18,
            type(uint256).max,
            100e18,
            type(uint256).max,
            100e18,
            type(uint256).max,
            type(uint256).max,
            type(uint256).max,
            0.5e18 - 1,
            type(uint256).max,
            type(uint256).max,
            10,
            10,
            1e18 - 1,
            type(uint96).max,
            type(uint32).max,
            type(uint32).max,
            100,
            128,
            1000e18
        ];
    }
    // </generated:param-functions>
}
