// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";

/// @title ContributionLedger
/// @notice The record of federated rounds. Rounds are recorded in increasing id order (a failed round leaves a
/// gap of at most {maxRoundGap} ids; ids fit an int32 like the platform's database ids), each once: the aggregated model's hash, the rewards Merkle root with its total and claim window, the
/// head of the platform's audit log, and the scored contributions. Clients verify a model they pulled against
/// {modelHashOf}; the RewardDistributor pays claims against {roundOf}.
/// @dev What a stolen aggregator key can mint is bounded here: a round's total by the governed round budget,
/// the totals recorded in any window of the governed emission period by the governed emission cap (a rolling
/// window, not calendar periods: no twice-the-cap around a boundary), and every root is claimable only after
/// the governed dispute window, during which governance (the timelock) or a GUARDIAN_ROLE holder can cancel it
/// ({cancelRewards}, {cancelRewardsBatch}) and the guardian can take the key's role away ({revokeAggregator}).
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
    /// @notice Largest round id: the platform's database ids are 32-bit signed integers.
    uint256 public constant MAX_ROUND_ID = uint256(uint32(type(int32).max));
    /// @notice Bounds of {maxRoundGap}: at the upper bound a stolen key needs 32,768 calls to exhaust the ids.
    uint256 public constant MAX_ROUND_GAP_LIMIT = 65_536 - 1;
    /// @notice {maxRoundGap} at deployment: 1024 consecutive failed rounds (3.5 days of 5-minute rounds).
    uint256 public constant DEFAULT_MAX_ROUND_GAP = 1024;
    /// @notice Most rounds one {cancelRewardsBatch} cancels.
    uint256 public constant MAX_CANCEL_BATCH = 256;
    /// @notice Unit of the emission buckets: 0.001 token (each round's total counts rounded up to it).
    uint256 public constant EMISSION_UNIT = 1e15;
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

    /// @dev The round counters and the emission accounting, packed in one storage word ({_packed}, read and
    /// written once per round; fields from the least significant bits in this order).
    /// The rolling emission window: time is cut in buckets of half the governed period (rounded up); a round
    /// is admitted if it and the current and two previous buckets sum to at most the cap. Any window of one
    /// period lies within three consecutive buckets, so no window of one period records more than the cap.
    /// @param latestRoundId The highest round id recorded so far (0 before the first round).
    /// @param roundsRecorded How many rounds were recorded.
    /// @param bucket Index of the current bucket (block time / bucket length).
    /// @param maxRoundGap Largest step between two recorded round ids.
    /// @param emitted0 Rewards recorded in the current bucket, in {EMISSION_UNIT}s (rounded up per round).
    /// @param emitted1 In the bucket before it.
    /// @param emitted2 In the bucket before that.
    struct Counters {
        uint32 latestRoundId;
        uint32 roundsRecorded;
        uint32 bucket;
        uint16 maxRoundGap;
        uint48 emitted0;
        uint48 emitted1;
        uint48 emitted2;
    }

    mapping(uint256 => Round) private _rounds;
    uint256 private _packed;

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
    /// @notice A guardian (or governance) took the aggregator role away from `account`, e.g. a stolen key. Only
    /// governance grants it again.
    /// @param account The former aggregator.
    /// @param by The guardian or the timelock.
    /// @param reason A short code for indexers.
    event AggregatorRevoked(address indexed account, address indexed by, bytes32 reason);
    /// @notice The audit log's head, anchored between rounds (the platform's timer), as {RoundRecorded} anchors it
    /// with every round.
    /// @param auditHead Hash of the platform's audit log entry number `auditCount`.
    /// @param auditCount Number of audit log entries the head covers.
    event AuditAnchored(bytes32 auditHead, uint256 auditCount);
    /// @notice Governance changed the largest step between two recorded round ids.
    event MaxRoundGapChanged(uint256 previous, uint256 current);

    /// @notice A constructor argument was the zero address.
    error ZeroAddress();
    /// @notice `roundId` is not above the latest recorded id.
    /// @param roundId The refused id.
    /// @param latest The latest recorded round id.
    error RoundOutOfOrder(uint256 roundId, uint256 latest);
    /// @notice `roundId` jumps more than {maxRoundGap} ids past the latest recorded one.
    /// @param roundId The refused id.
    /// @param latest The latest recorded round id.
    /// @param maxGap The largest step allowed.
    error RoundGapTooLarge(uint256 roundId, uint256 latest, uint256 maxGap);
    /// @notice `roundId` is above {MAX_ROUND_ID}.
    error RoundIdOutOfRange(uint256 roundId, uint256 max);
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
    /// @notice Recording `total` would take the rolling emission window past the governed cap.
    /// @param emitted Already recorded in the window, in token wei (each round rounded up to {EMISSION_UNIT}).
    /// @param cap The governed emission cap per period.
    /// @param freesAt When the oldest non-empty bucket leaves the window (retry then, or later).
    error EmissionCapExceeded(uint256 roundId, uint256 total, uint256 emitted, uint256 cap, uint256 freesAt);
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
    /// @notice A {cancelRewardsBatch} of `size` rounds is empty or above {MAX_CANCEL_BATCH}.
    error BadCancelBatch(uint256 size);
    /// @notice `account` holds no aggregator role to revoke.
    error NotAggregator(address account);
    /// @notice An audit anchor with a zero head or a zero count.
    error InvalidAuditAnchor();
    /// @notice A maximal round gap outside 1..{MAX_ROUND_GAP_LIMIT}.
    error InvalidRoundGap(uint256 value);

    /// @param params_ Governed parameters (round budget, emission cap and period, dispute window).
    /// @param distributor_ The RewardDistributor's address (the deploy script computes it before deploying it).
    /// @param admin DEFAULT_ADMIN_ROLE holder (the timelock after deployment).
    constructor(ProtocolParameters params_, address distributor_, address admin) {
        if (address(params_) == address(0) || distributor_ == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        params = params_;
        distributor = distributor_;
        _packed = DEFAULT_MAX_ROUND_GAP << 96;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Record a closed round, with its rewards if it pays any.
    /// @param roundId The platform's round id: above {latestRoundId}, at most {maxRoundGap} past it, at most
    /// {MAX_ROUND_ID}.
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
        Counters memory c = _nextRound(roundId);
        if (modelHash == bytes32(0)) revert InvalidModelHash();
        uint256 sum = _sumContributions(contributions);
        if (sum != totalReward) revert TotalRewardMismatch(totalReward, sum);
        uint256 claimableAt = _store(c, roundId, modelHash, rewardsRoot, totalReward);
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

    /// @notice Anchor the audit log's head without recording a round, so entries written between rounds do not
    /// wait for the next round to be anchored. Only the aggregator; an anchor stores nothing (the event is the
    /// record, read like {RoundRecorded}'s).
    /// @param auditHead Hash of the audit log's entry number `auditCount` (non-zero).
    /// @param auditCount Number of audit log entries up to and including `auditHead` (non-zero).
    function anchorAudit(bytes32 auditHead, uint64 auditCount) external onlyRole(AGGREGATOR_ROLE) {
        if (auditHead == bytes32(0) || auditCount == 0) revert InvalidAuditAnchor();
        emit AuditAnchored(auditHead, auditCount);
    }

    /// @notice Cancel a round's rewards during their dispute window (e.g. recorded with a stolen aggregator
    /// key). Only the admin (the timelock, i.e. governance) or a GUARDIAN_ROLE holder. The amount stays counted
    /// in its emission window, so cancelling never lets a thief record more.
    /// @param roundId The round.
    /// @param reason A short code for indexers.
    function cancelRewards(uint256 roundId, bytes32 reason) external {
        _checkGuardian();
        _cancel(roundId, reason);
    }

    /// @notice {cancelRewards} for up to {MAX_CANCEL_BATCH} rounds in one transaction (an incident's response:
    /// every root a stolen key recorded in the window). Reverts as {cancelRewards} does if any cannot be
    /// cancelled.
    /// @param roundIds The rounds.
    /// @param reason A short code for indexers.
    function cancelRewardsBatch(uint256[] calldata roundIds, bytes32 reason) external {
        _checkGuardian();
        uint256 n = roundIds.length;
        if (n == 0 || n > MAX_CANCEL_BATCH) revert BadCancelBatch(n);
        for (uint256 i = 0; i < n; ++i) {
            _cancel(roundIds[i], reason);
        }
    }

    /// @notice Take AGGREGATOR_ROLE away from `account` at once (a stolen key: the guardian need not wait for a
    /// governance vote). Only the admin or a guardian; only governance grants the role again.
    /// @param account The aggregator account.
    /// @param reason A short code for indexers.
    function revokeAggregator(address account, bytes32 reason) external {
        _checkGuardian();
        if (!_revokeRole(AGGREGATOR_ROLE, account)) revert NotAggregator(account);
        emit AggregatorRevoked(account, msg.sender, reason);
    }

    /// @notice Change the largest step between two recorded round ids. Only the admin (the timelock).
    /// @param maxGap 1..{MAX_ROUND_GAP_LIMIT}.
    function setMaxRoundGap(uint256 maxGap) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (maxGap == 0 || maxGap > MAX_ROUND_GAP_LIMIT) revert InvalidRoundGap(maxGap);
        Counters memory c = _load();
        emit MaxRoundGapChanged(c.maxRoundGap, maxGap);
        c.maxRoundGap = uint16(maxGap);
        _save(c);
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

    /// @notice The highest round id recorded so far (0 before the first round).
    function latestRoundId() external view returns (uint256) {
        return _load().latestRoundId;
    }

    /// @notice How many rounds were recorded.
    function roundsRecorded() external view returns (uint256) {
        return _load().roundsRecorded;
    }

    /// @notice The largest step between two recorded round ids (failed rounds leave gaps).
    function maxRoundGap() external view returns (uint256) {
        return _load().maxRoundGap;
    }

    /// @notice Rewards recorded in the rolling emission window as of now, in token wei (each round rounded up
    /// to {EMISSION_UNIT}): what a new round's total is added to before the cap check.
    function emittedInWindow() external view returns (uint256) {
        (, , uint256 period, ) = params.rewardLimits();
        Counters memory c = _load();
        _shift(c, block.timestamp / _bucketLength(period));
        return (uint256(c.emitted0) + c.emitted1 + c.emitted2) * EMISSION_UNIT;
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

    /// @dev The counters, after checking that `roundId` may come next.
    function _nextRound(uint256 roundId) private view returns (Counters memory c) {
        c = _load();
        uint256 latest = c.latestRoundId;
        if (roundId > MAX_ROUND_ID) revert RoundIdOutOfRange(roundId, MAX_ROUND_ID);
        if (roundId <= latest) revert RoundOutOfOrder(roundId, latest);
        if (roundId - latest > c.maxRoundGap) revert RoundGapTooLarge(roundId, latest, c.maxRoundGap);
    }

    /// @dev Stores the round (with its rewards, counted in the emission window) and the counters (one slot);
    /// returns when claims open (0 if it pays nothing).
    function _store(
        Counters memory c,
        uint256 roundId,
        bytes32 modelHash,
        bytes32 rewardsRoot,
        uint256 total
    ) private returns (uint256 claimableAt) {
        Round storage r = _rounds[roundId];
        r.modelHash = modelHash;
        if (total > 0) {
            if (rewardsRoot == bytes32(0)) revert ZeroRoot(roundId);
            claimableAt = _countEmission(c, roundId, total);
            r.rewardsRoot = rewardsRoot;
            r.totalReward = uint96(total);
            r.claimableAt = uint56(claimableAt);
        }
        c.latestRoundId = uint32(roundId);
        c.roundsRecorded += 1;
        _save(c);
    }

    function _load() private view returns (Counters memory c) {
        uint256 w = _packed;
        c.latestRoundId = uint32(w);
        c.roundsRecorded = uint32(w >> 32);
        c.bucket = uint32(w >> 64);
        c.maxRoundGap = uint16(w >> 96);
        c.emitted0 = uint48(w >> 112);
        c.emitted1 = uint48(w >> 160);
        c.emitted2 = uint48(w >> 208);
    }

    function _save(Counters memory c) private {
        _packed =
            uint256(c.latestRoundId) |
            (uint256(c.roundsRecorded) << 32) |
            (uint256(c.bucket) << 64) |
            (uint256(c.maxRoundGap) << 96) |
            (uint256(c.emitted0) << 112) |
            (uint256(c.emitted1) << 160) |
            (uint256(c.emitted2) << 208);
    }

    function _checkGuardian() private view {
        if (!hasRole(GUARDIAN_ROLE, msg.sender) && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotGuardian(msg.sender);
        }
    }

    function _cancel(uint256 roundId, bytes32 reason) private {
        Round storage r = _rounds[roundId];
        if (r.totalReward == 0) revert NoRewards(roundId);
        if (r.cancelled) revert RewardsAreCancelled(roundId);
        if (block.timestamp >= r.claimableAt) revert DisputeWindowClosed(roundId, r.claimableAt);
        r.cancelled = true;
        emit RewardsCancelled(roundId, msg.sender, reason);
    }

    /// @dev Half the period, rounded up (at least one second): three buckets always span a whole period.
    function _bucketLength(uint256 period) private pure returns (uint256) {
        return (period + 1) / 2;
    }

    /// @dev Moves the buckets forward to bucket `index` (a lower index, after governance lengthened the period,
    /// keeps the current one: the amounts then count longer, never shorter).
    function _shift(Counters memory c, uint256 index) private pure {
        if (index <= c.bucket) return;
        uint256 steps = index - c.bucket;
        if (steps == 1) {
            (c.emitted2, c.emitted1) = (c.emitted1, c.emitted0);
        } else if (steps == 2) {
            (c.emitted2, c.emitted1) = (c.emitted0, 0);
        } else {
            (c.emitted2, c.emitted1) = (0, 0);
        }
        c.emitted0 = 0;
        c.bucket = uint32(index);
    }

    /// @dev Checks `total` against the round budget and the rolling emission window, counts it in the current
    /// bucket and returns when claims open.
    function _countEmission(Counters memory c, uint256 roundId, uint256 total) private view returns (uint256) {
        (uint256 budget, uint256 cap, uint256 period, uint256 window) = params.rewardLimits();
        if (total > budget) revert BudgetExceeded(roundId, total, budget);
        uint256 length = _bucketLength(period);
        uint256 index = block.timestamp / length;
        _shift(c, index);
        uint256 emitted = (uint256(c.emitted0) + c.emitted1 + c.emitted2) * EMISSION_UNIT;
        if (emitted + total > cap) {
            uint256 free = c.emitted2 > 0 ? index + 1 : (c.emitted1 > 0 ? index + 2 : index + 3);
            revert EmissionCapExceeded(roundId, total, emitted, cap, free * length);
        }
        // Below the cap (a uint96), so the bucket fits its 48 bits in units of 0.001 token.
        c.emitted0 += uint48((total + EMISSION_UNIT - 1) / EMISSION_UNIT);
        return block.timestamp + window;
    }
}
