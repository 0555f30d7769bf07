// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {RewardDistributor} from "./RewardDistributor.sol";

/// @title ContributionLedger
/// @notice The audit trail of federated rounds: once per round id, the aggregated model's hash, the rewards
/// Merkle root and one event per scored contribution. Clients verify a model they pulled against
/// {modelHashOf}.
contract ContributionLedger is AccessControl {
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice Upper bound of contributions in one round (bounds the loop in {recordRound}).
    uint256 public constant MAX_CONTRIBUTIONS = 2048;
    /// @notice Scores are 0..100 with two decimals: 0..10000.
    uint16 public constant MAX_SCORE = 10_000;

    /// @param participant The organization's wallet.
    /// @param updateHash SHA-256 of the encrypted update the participant submitted.
    /// @param quality, timeliness, honesty, fitness Scores ×100 (0..10000).
    /// @param reward Token wei assigned to the participant (the same amount as its Merkle leaf).
    struct Contribution {
        address participant;
        bytes32 updateHash;
        uint16 quality;
        uint16 timeliness;
        uint16 honesty;
        uint16 fitness;
        uint128 reward;
    }

    struct RoundRecord {
        bytes32 modelHash;
        bytes32 rewardsRoot;
        uint128 totalReward;
        uint32 participantCount;
        uint64 recordedAt;
    }

    RewardDistributor public immutable distributor;
    mapping(uint256 => RoundRecord) private _rounds;
    uint256 public roundsRecorded;
    uint256 public latestRoundId;

    event RoundRecorded(
        uint256 indexed roundId, bytes32 modelHash, bytes32 rewardsRoot, uint256 participantCount, uint256 totalReward
    );
    event ContributionRecorded(
        uint256 indexed roundId,
        address indexed participant,
        bytes32 updateHash,
        uint16 quality,
        uint16 timeliness,
        uint16 honesty,
        uint16 fitness,
        uint256 reward
    );

    error ZeroAddress();
    error InvalidRoundId();
    error InvalidModelHash();
    error RoundAlreadyRecorded(uint256 roundId);
    error NoContributions();
    error TooManyContributions(uint256 count, uint256 max);
    error ScoreOutOfRange(uint256 index);
    error ZeroParticipant(uint256 index);
    error TotalRewardMismatch(uint256 declared, uint256 sum);

    constructor(RewardDistributor distributor_, address admin) {
        if (address(distributor_) == address(0) || admin == address(0)) revert ZeroAddress();
        distributor = distributor_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Record a closed round, exactly once per `roundId`, and post its rewards root to the
    /// distributor in the same transaction.
    /// @param roundId The platform's round id (> 0).
    /// @param modelHash SHA-256 of the new global model's weights file.
    /// @param rewardsRoot Merkle root of (roundId, participant, reward) leaves.
    /// @param totalReward Sum of the rewards (checked against the contributions and the round budget).
    /// @param contributions One entry per scored participant (at most MAX_CONTRIBUTIONS).
    function recordRound(
        uint256 roundId,
        bytes32 modelHash,
        bytes32 rewardsRoot,
        uint256 totalReward,
        Contribution[] calldata contributions
    ) external onlyRole(AGGREGATOR_ROLE) {
        if (roundId == 0) revert InvalidRoundId();
        if (modelHash == bytes32(0)) revert InvalidModelHash();
        if (_rounds[roundId].recordedAt != 0) revert RoundAlreadyRecorded(roundId);
        uint256 n = contributions.length;
        if (n == 0) revert NoContributions();
        if (n > MAX_CONTRIBUTIONS) revert TooManyContributions(n, MAX_CONTRIBUTIONS);

        uint256 sum;
        for (uint256 i = 0; i < n; ++i) {
            Contribution calldata c = contributions[i];
            if (c.participant == address(0)) revert ZeroParticipant(i);
            if (c.quality > MAX_SCORE || c.timeliness > MAX_SCORE || c.honesty > MAX_SCORE || c.fitness > MAX_SCORE)
            {
                revert ScoreOutOfRange(i);
            }
            sum += c.reward;
            emit ContributionRecorded(
                roundId, c.participant, c.updateHash, c.quality, c.timeliness, c.honesty, c.fitness, c.reward
            );
        }
        if (sum != totalReward) revert TotalRewardMismatch(totalReward, sum);

        _rounds[roundId] = RoundRecord({
            modelHash: modelHash,
            rewardsRoot: rewardsRoot,
            totalReward: uint128(totalReward),
            participantCount: uint32(n),
            recordedAt: uint64(block.timestamp)
        });
        roundsRecorded += 1;
        if (roundId > latestRoundId) latestRoundId = roundId;
        emit RoundRecorded(roundId, modelHash, rewardsRoot, n, totalReward);
        if (totalReward > 0) distributor.postRoot(roundId, rewardsRoot, totalReward);
    }

    /// @notice Whether `roundId` was recorded.
    function isRecorded(uint256 roundId) external view returns (bool) {
        return _rounds[roundId].recordedAt != 0;
    }

    /// @notice The model hash recorded for `roundId` (zero if not recorded).
    function modelHashOf(uint256 roundId) external view returns (bytes32) {
        return _rounds[roundId].modelHash;
    }

    /// @notice The full record of `roundId`.
    function roundOf(uint256 roundId) external view returns (RoundRecord memory) {
        return _rounds[roundId];
    }
}
