// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";

/// @title ContributionLedger
/// @notice The record of federated rounds. Rounds are recorded in increasing id order (a failed round leaves a
/// gap), each once: the aggregated model's hash, the rewards Merkle root with its total and claim window, the
/// head of the platform's audit log, and the scored contributions. Clients verify a model they pulled against
/// {modelHashOf}; the RewardDistributor pays claims against {roundOf}.
/// @dev What a stolen aggregator key can mint is bounded here: a round's total by the governed round budget,
/// the totals recorded in one emission period by the governed emission cap, and every root is claimable only
/// after the governed dispute window, during which governance (the timelock) or a GUARDIAN_ROLE holder can
/// cancel it ({cancelRewards}).
/// Gas: the contributions travel as packed calldata (an indexer decodes them from the transaction's input,
/// `fedledger.chain.ledger.unpack_contributions`); a round stores its model hash, and, if it pays rewards, its
/// root and one packed slot, and updates one slot of counters. No call to another contract but the parameters.
contract ContributionLedger is AccessControl {
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");
    /// @notice May cancel a rewards root during its dispute window (the timelock grants it).
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice Upper bound of contributions in one round (bounds the loop in {recordRound}).
    uint256 public constant MAX_CONTRIBUTIONS = 2048;
    /// @notice Scores are 0..100 with two decimals: 0..10000.
    uint256 public constant MAX_SCORE = 10_000;
    /// @notice Largest step between two recorded round ids: failed rounds leave gaps, but a stolen key cannot
    /// exhaust the id space (and brick the ledger) in a few transactions.
    uint256 public constant MAX_ROUND_GAP = 2 ** 32;
    /// @notice Bytes per packed contribution: participant (20), quality, timeliness, honesty, fitness (2 each,
    /// big-endian, scores x100) and reward (12, token wei, big-endian). The SHA-256 of each participant's
    /// encrypted update is committed to as a whole by `updatesHash`.
    uint256 public constant CONTRIBUTION_BYTES = 40;

    /// @param modelHash SHA-256 of the round's global model weights file (non-zero once recorded).
    /// @param rewardsRoot Merkle root of (roundId, account, amount) leaves (zero if the round paid nothing).
    /// @param totalReward Most that may be minted for the round, whatever the root contains.
    /// @param claimed Minted so far.
    /// @param claimableAt First timestamp at which claims are paid (recording time + dispute window).
    /// @param cancelled Whether governance or a guardian cancelled the rewards.
    struct Round {
        bytes32 modelHash;
        bytes32 rewardsRoot;
        uint96 totalReward;
        uint96 claimed;
        uint56 claimableAt;
        bool cancelled;
    }

    ProtocolParameters public immutable params;
    /// @notice The RewardDistributor, the only contract that may count claims against a round.
    address public immutable distributor;

    mapping(uint256 => Round) private _rounds;
    /// @notice The highest round id recorded so far (0 before the first round).
    uint64 public latestRoundId;
    /// @notice How many rounds were recorded.
    uint32 public roundsRecorded;
    /// @notice Start of the current emission period (a multiple of the governed period length).
    uint40 public periodStart;
    /// @notice Sum of the rewards totals recorded since {periodStart}, in token wei.
    uint120 public periodEmitted;

    /// @notice A round was recorded.
    /// @param roundId The platform's round id (strictly greater than every earlier one).
    /// @param modelHash SHA-256 of the new global model's weights file.
    /// @param rewardsRoot Merkle root of the round's (roundId, account, amount) reward leaves.
    /// @param totalReward Sum of the contributions' rewards, in token wei.
    /// @param claimableAt When claims open (0 if the round pays nothing).
    /// @param auditHead Hash of the platform's audit log entry number `auditCount` (its head when posting).
    /// @param auditCount Number of audit log entries the head covers.
    /// @param updatesHash keccak256 of the contributions' update hashes (32 bytes each, in contribution order).
    event RoundRecorded(
        uint256 indexed roundId,
        bytes32 modelHash,
        bytes32 rewardsRoot,
        uint256 totalReward,
        uint256 claimableAt,
        bytes32 auditHead,
        uint256 auditCount,
        bytes32 updatesHash
    );
    /// @notice A round's rewards were cancelled during their dispute window; nothing of them can be claimed.
    /// @param roundId The round.
    /// @param by Who cancelled them (the timelock or a guardian).
    /// @param reason A short code for indexers, e.g. keccak256("stolen-aggregator-key").
    event RewardsCancelled(uint256 indexed roundId, address indexed by, bytes32 reason);

    /// @notice A constructor argument was the zero address.
    error ZeroAddress();
    /// @notice `roundId` is not above the latest recorded id, or jumps more than {MAX_ROUND_GAP} past it.
    /// @param roundId The refused id.
    /// @param latest The latest recorded round id.
    error RoundOutOfOrder(uint256 roundId, uint256 latest);
    /// @notice The model hash was zero.
    error InvalidModelHash();
    /// @notice The round pays rewards but its root is zero (nothing could ever be claimed).
    error ZeroRoot(uint256 roundId);
    /// @notice The contributions were empty or not a whole number of {CONTRIBUTION_BYTES} records.
    /// @param length The length of the packed contributions in bytes.
    error MalformedContributions(uint256 length);
    /// @notice More than {MAX_CONTRIBUTIONS} contributions.
    error TooManyContributions(uint256 count, uint256 max);
    /// @notice A score of contribution `index` is above {MAX_SCORE}.
    error ScoreOutOfRange(uint256 index);
    /// @notice Contribution `index` names the zero address.
    error ZeroParticipant(uint256 index);
    /// @notice The declared total differs from the sum of the contributions' rewards.
    error TotalRewardMismatch(uint256 declared, uint256 sum);
    /// @notice The round's total exceeds the governed round reward budget.
    error BudgetExceeded(uint256 roundId, uint256 total, uint256 budget);
    /// @notice Recording `total` would take the current emission period past the governed cap.
    /// @param emitted Already recorded in the period.
    /// @param cap The governed emission cap per period.
    /// @param periodEnds When the current period ends (and the cap resets).
    error EmissionCapExceeded(uint256 roundId, uint256 total, uint256 emitted, uint256 cap, uint256 periodEnds);
    /// @notice `roundId` has no rewards (not recorded, or it paid nothing).
    error NoRewards(uint256 roundId);
    /// @notice The round's dispute window is still running; claims open at `claimableAt`.
    error DisputeWindowOpen(uint256 roundId, uint256 claimableAt);
    /// @notice The round's dispute window is over (claims may have been paid): it can no longer be cancelled.
    error DisputeWindowClosed(uint256 roundId, uint256 claimableAt);
    /// @notice The round's rewards were cancelled.
    error RewardsAreCancelled(uint256 roundId);
    /// @notice Paying `claimed` in total would take the round past its recorded total.
    error RoundTotalExceeded(uint256 roundId, uint256 claimed, uint256 total);
    /// @notice The caller is neither the admin (the timelock) nor a guardian.
    error NotGuardian(address caller);
    /// @notice Only the RewardDistributor counts claims.
    error NotDistributor(address caller);

    /// @param params_ Governed parameters (round budget, emission cap and period, dispute window).
    /// @param distributor_ The RewardDistributor's address (the deploy script computes it before deploying it).
    /// @param admin DEFAULT_ADMIN_ROLE holder (the timelock after deployment).
    constructor(ProtocolParameters params_, address distributor_, address admin) {
        if (address(params_) == address(0) || distributor_ == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        params = params_;
        distributor = distributor_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Record a closed round, with its rewards if it pays any.
    /// @param roundId The platform's round id: above {latestRoundId}, at most {MAX_ROUND_GAP} past it.
    /// @param modelHash SHA-256 of the new global model's weights file (non-zero).
    /// @param rewardsRoot Merkle root of (roundId, participant, reward) leaves (non-zero if `totalReward` > 0).
    /// @param totalReward Sum of the rewards (checked against the contributions, the round budget and the
    /// emission cap).
    /// @param auditHead Hash of the audit log's latest entry, anchoring the log as of this round.
    /// @param auditCount Number of audit log entries up to and including `auditHead`.
    /// @param updatesHash keccak256 of the participants' update hashes (SHA-256 of each encrypted update, 32
    /// bytes each, in the order of `contributions`).
    /// @param contributions Packed contributions, {CONTRIBUTION_BYTES} bytes each, at most {MAX_CONTRIBUTIONS}.
    function recordRound(
        uint256 roundId,
        bytes32 modelHash,
        bytes32 rewardsRoot,
        uint256 totalReward,
        bytes32 auditHead,
        uint64 auditCount,
        bytes32 updatesHash,
        bytes calldata contributions
    ) external onlyRole(AGGREGATOR_ROLE) {
        uint256 latest = latestRoundId;
        if (roundId <= latest || roundId - latest > MAX_ROUND_GAP) revert RoundOutOfOrder(roundId, latest);
        if (modelHash == bytes32(0)) revert InvalidModelHash();
        uint256 sum = _sumContributions(contributions);
        if (sum != totalReward) revert TotalRewardMismatch(totalReward, sum);

        Round storage r = _rounds[roundId];
        r.modelHash = modelHash;
        uint256 claimableAt;
        if (totalReward > 0) {
            if (rewardsRoot == bytes32(0)) revert ZeroRoot(roundId);
            claimableAt = _countEmission(roundId, totalReward);
            r.rewardsRoot = rewardsRoot;
            r.totalReward = uint96(totalReward);
            r.claimableAt = uint56(claimableAt);
        } else {
            latestRoundId = uint64(roundId);
            roundsRecorded += 1;
        }
        emit RoundRecorded(
            roundId,
            modelHash,
            rewardsRoot,
            totalReward,
            claimableAt,
            auditHead,
            auditCount,
            updatesHash
        );
    }

    /// @notice Cancel a round's rewards during their dispute window (e.g. recorded with a stolen aggregator
    /// key). Only the admin (the timelock, i.e. governance) or a GUARDIAN_ROLE holder. The amount stays counted
    /// in its emission period, so cancelling never lets a thief record more.
    /// @param roundId The round.
    /// @param reason A short code for indexers.
    function cancelRewards(uint256 roundId, bytes32 reason) external {
        if (!hasRole(GUARDIAN_ROLE, msg.sender) && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotGuardian(msg.sender);
        }
        Round storage r = _rounds[roundId];
        if (r.totalReward == 0) revert NoRewards(roundId);
        if (r.cancelled) revert RewardsAreCancelled(roundId);
        if (block.timestamp >= r.claimableAt) revert DisputeWindowClosed(roundId, r.claimableAt);
        r.cancelled = true;
        emit RewardsCancelled(roundId, msg.sender, reason);
    }

    /// @notice Count a claim of `amount` against round `roundId` and return its rewards root. Only the
    /// RewardDistributor, which then checks the Merkle proof (a failed proof reverts this count with it).
    function consumeRewards(uint256 roundId, uint256 amount) external returns (bytes32 root) {
        if (msg.sender != distributor) revert NotDistributor(msg.sender);
        Round storage r = _rounds[roundId];
        uint256 total = r.totalReward;
        if (total == 0) revert NoRewards(roundId);
        if (r.cancelled) revert RewardsAreCancelled(roundId);
        if (block.timestamp < r.claimableAt) revert DisputeWindowOpen(roundId, r.claimableAt);
        uint256 claimedAfter = uint256(r.claimed) + amount;
        if (claimedAfter > total) revert RoundTotalExceeded(roundId, claimedAfter, total);
        // The distributor's Claimed event records this change (one event per claim, not two).
        r.claimed = uint96(claimedAfter);
        return r.rewardsRoot;
    }

    /// @notice Whether `roundId` was recorded.
    function isRecorded(uint256 roundId) external view returns (bool) {
        return _rounds[roundId].modelHash != bytes32(0);
    }

    /// @notice The model hash recorded for `roundId` (zero if not recorded).
    function modelHashOf(uint256 roundId) external view returns (bytes32) {
        return _rounds[roundId].modelHash;
    }

    /// @notice The full record of `roundId` (all zero if not recorded).
    function roundOf(uint256 roundId) external view returns (Round memory) {
        return _rounds[roundId];
    }

    /// @dev Validates the packed contributions; returns the sum of their rewards.
    function _sumContributions(bytes calldata contributions) private pure returns (uint256 sum) {
        uint256 length = contributions.length;
        if (length == 0 || length % CONTRIBUTION_BYTES != 0) revert MalformedContributions(length);
        uint256 n = length / CONTRIBUTION_BYTES;
        if (n > MAX_CONTRIBUTIONS) revert TooManyContributions(n, MAX_CONTRIBUTIONS);
        for (uint256 i = 0; i < n; ++i) {
            uint256 head;
            uint256 tail;
            assembly ("memory-safe") {
                let p := add(contributions.offset, mul(i, 40))
                head := calldataload(p) // participant (20) | 4 scores (8) | first 4 bytes of the reward
                tail := calldataload(add(p, 8)) // last 12 bytes of the participant | 4 scores (8) | reward (12)
            }
            if (head >> 96 == 0) revert ZeroParticipant(i);
            uint256 scores = (tail >> 96) & 0xffffffffffffffff;
            if (
                scores >> 48 > MAX_SCORE ||
                (scores >> 32) & 0xffff > MAX_SCORE ||
                (scores >> 16) & 0xffff > MAX_SCORE ||
                scores & 0xffff > MAX_SCORE
            ) revert ScoreOutOfRange(i);
            sum += tail & 0xffffffffffffffffffffffff;
        }
    }

    /// @dev Checks `total` against the round budget and the emission cap, counts it in the current emission
    /// period, advances the round counters (same storage slot) and returns when claims open.
    function _countEmission(uint256 roundId, uint256 total) private returns (uint256 claimableAt) {
        (uint256 budget, uint256 cap, uint256 period, uint256 window) = params.rewardLimits();
        if (total > budget) revert BudgetExceeded(roundId, total, budget);
        uint256 start = periodStart;
        uint256 emitted = periodEmitted;
        if (block.timestamp >= start + period) {
            start = block.timestamp - (block.timestamp % period);
            emitted = 0;
        }
        emitted += total;
        if (emitted > cap) revert EmissionCapExceeded(roundId, total, emitted - total, cap, start + period);
        latestRoundId = uint64(roundId);
        roundsRecorded += 1;
        periodStart = uint40(start);
        periodEmitted = uint120(emitted);
        return block.timestamp + window;
    }
}
