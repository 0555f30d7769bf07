// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";
import {ContributionLedger} from "./ContributionLedger.sol";

/// @title ParticipantRegistry
/// @notice Organizations enroll their wallet by staking reward tokens. Stake cannot flee a slash: it leaves only
/// after an unbonding period that starts with {requestExit}, once the ledger has recorded a round after the exit
/// request *and* the latest round the aggregator saw the organization take part in ({markActive}), and with no
/// slash pending; it stays slashable until withdrawn. A slashed address keeps its record (Byzantine and slash
/// counts) when it enrolls again. Active organizations idle past the activity timeout can be suspended by
/// anyone, and resume themselves.
/// What a stolen slasher key can take is bounded: a {slash} takes at once at most {promptSlashBps} of an
/// organization's stake, once per {slashDelay}; the rest of it waits {slashDelay} as a pending slash that a
/// GUARDIAN_ROLE holder (or the timelock) cancels ({cancelSlashes}). The guardian also reverses suspensions
/// ({reinstate}) and takes the aggregator's roles away at once ({revokeOperator}).
/// @dev Every function updates its state before it moves tokens (checks-effects-interactions), and the token
/// is the platform's RewardToken, which calls no hooks: there is no reentrancy path.
contract ParticipantRegistry is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");
    /// @notice Cancels pending slashes, reinstates suspended or slashed organizations, revokes the operational
    /// roles of a stolen key. Moves no tokens.
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice Bound on batches ({recordByzantine}, {markActive}, {suspendInactive}).
    uint256 public constant MAX_BATCH = 2048;
    /// @notice Largest round id (the platform's database ids are 32-bit signed integers).
    uint256 public constant MAX_ROUND_ID = uint256(uint32(type(int32).max));
    /// @notice Bounds of {slashDelay}: a guardian needs time to respond, a slash must land within a month.
    uint256 public constant MIN_SLASH_DELAY = 1 hours;
    uint256 public constant MAX_SLASH_DELAY = 30 days;
    /// @notice Upper bound of {promptSlashBps}: half of a stake at most is ever taken without a window.
    uint256 public constant MAX_PROMPT_SLASH_BPS = 5_000;
    /// @notice The `reason` of the Slashed event of a pending slash executed after its window (its own reasons
    /// are in the SlashQueued events).
    bytes32 public constant PENDING_SLASH_REASON = keccak256("fedledger:pending-slash");

    enum Status {
        None,
        Active,
        Suspended,
        Slashed,
        Exited
    }

    /// @param stake Staked token wei (slashable until withdrawn).
    /// @param enrolledAt Timestamp of the latest enrollment.
    /// @param exitRequestedAt Timestamp of the latest exit request (0 if none since enrollment).
    /// @param byzantineCount Byzantine detections, ever (kept across re-enrollment).
    /// @param slashCount Slashes, ever (kept across re-enrollment).
    /// @param unlockRound After an exit request: the stake is withdrawable once the ledger's latest round id
    /// reaches this (latest id at the request + 1); 0 once governance released it.
    /// @param lastRound The latest round id the aggregator saw the participant take part in ({markActive}); an
    /// exit waits until the ledger has recorded this very round (a jump of the ids past it does not count).
    /// @param lastActiveAt Last evidence of activity: enrollment, {markActive} by the aggregator, {resume}.
    /// @param inactive Whether the current suspension is for inactivity (the participant may {resume}).
    /// @param status Current status (last field: readers index it as such).
    struct Participant {
        uint128 stake;
        uint64 enrolledAt;
        uint64 exitRequestedAt;
        uint32 byzantineCount;
        uint32 slashCount;
        uint64 unlockRound;
        uint32 lastRound;
        uint64 lastActiveAt;
        bool inactive;
        Status status;
    }

    /// @param amount Token wei waiting to be slashed (at most the stake when queued; capped at the stake when
    /// executed).
    /// @param executableAt When anyone may execute it ({executeSlash}); a guardian may cancel it before then.
    /// @param lastPromptAt When the participant was last slashed without a window (0 if never).
    struct PendingSlash {
        uint128 amount;
        uint40 executableAt;
        uint40 lastPromptAt;
    }

    IERC20 public immutable token;
    ProtocolParameters public immutable params;
    /// @notice The ledger whose recorded rounds gate withdrawals.
    ContributionLedger public immutable ledger;
    /// @notice Where slashed stake goes (the timelock treasury).
    address public treasury;
    /// @notice Seconds a slash beyond the prompt part waits, cancellable by a guardian (default 1 day).
    uint32 public slashDelay;
    /// @notice Most of a stake, in basis points, that one {slash} takes at once (default 1000: 10 %); at most
    /// one such prompt slash per participant per {slashDelay}.
    uint16 public promptSlashBps;

    mapping(address => Participant) private _participants;
    mapping(address => PendingSlash) private _pendingSlashes;
    /// @notice Number of participants with status Active.
    uint256 public activeCount;
    /// @notice Sum of every participant's stake.
    uint256 public totalStaked;

    /// @notice `participant` enrolled (or re-enrolled) with `stake`.
    event Enrolled(address indexed participant, uint256 stake);
    /// @notice `participant` added `amount`, for a stake of `newStake`.
    event StakeAdded(address indexed participant, uint256 amount, uint256 newStake);
    /// @notice `participant` asked to leave; its stake is withdrawable from `withdrawableAt` once the ledger
    /// has recorded round `unlockRound` or a later one.
    event ExitRequested(address indexed participant, uint256 withdrawableAt, uint256 unlockRound);
    /// @notice Governance lifted the round condition of `participant`'s exit (the platform stopped recording).
    event ExitReleased(address indexed participant);
    /// @notice `participant` withdrew `amount` (its whole stake).
    event Withdrawn(address indexed participant, uint256 amount);
    /// @notice `amount` of `participant`'s stake went to the treasury.
    /// @param reason A short code, e.g. keccak256("fedledger:round:7:low_honesty").
    /// @param remainingStake The stake left after the slash.
    event Slashed(address indexed participant, uint256 amount, bytes32 indexed reason, uint256 remainingStake);
    /// @notice One more Byzantine detection for `participant`, now `count` in total.
    event ByzantineRecorded(address indexed participant, uint32 count);
    /// @notice The aggregator saw `participant` take part in round `roundId` (0: no round named) at `at`.
    event ActivityRecorded(address indexed participant, uint256 roundId, uint256 at);
    /// @notice `participant` was suspended for inactivity; it had been idle since `lastActiveAt`.
    event SuspendedForInactivity(address indexed participant, uint256 lastActiveAt);
    /// @notice `participant`'s status changed from `previous` to `current`.
    event StatusChanged(address indexed participant, Status previous, Status current);
    /// @notice Slashed stake now goes to `current` instead of `previous`.
    event TreasuryChanged(address previous, address current);
    /// @notice `amount` of `participant`'s stake will be slashed at `executableAt` unless a guardian cancels it.
    /// @param reason The slash's short code.
    /// @param pending Everything now pending against the participant (this included).
    event SlashQueued(
        address indexed participant,
        uint256 amount,
        bytes32 indexed reason,
        uint256 executableAt,
        uint256 pending
    );
    /// @notice A guardian (or governance) cancelled the `amount` pending against `participant`.
    event SlashCancelled(address indexed participant, uint256 amount, address indexed by, bytes32 reason);
    /// @notice A guardian (or governance) took the operational roles (aggregator, slasher) away from `account`.
    event OperatorRevoked(address indexed account, address indexed by, bytes32 reason);
    /// @notice Governance changed {slashDelay}.
    event SlashDelayChanged(uint256 previous, uint256 current);
    /// @notice Governance changed {promptSlashBps}.
    event PromptSlashBpsChanged(uint256 previous, uint256 current);

    /// @notice An address argument was the zero address.
    error ZeroAddress();
    /// @notice An amount was zero.
    error ZeroAmount();
    /// @notice `stake` is below the governed minimum stake.
    error StakeBelowMinimum(uint256 stake, uint256 minimum);
    /// @notice `participant` is enrolled already (or still has stake to withdraw).
    error AlreadyEnrolled(address participant, Status status);
    /// @notice `participant` never enrolled.
    error NotEnrolled(address participant);
    /// @notice The operation is not allowed in `participant`'s current `status`.
    error InvalidStatus(address participant, Status status);
    /// @notice The unbonding period of `participant` ends at `withdrawableAt`.
    error UnbondingNotOver(address participant, uint256 withdrawableAt);
    /// @notice The ledger has not yet recorded round `unlockRound` (latest is `latestRound`): a round
    /// `participant` may have submitted to is still unposted.
    error RoundsPending(address participant, uint256 unlockRound, uint256 latestRound);
    /// @notice `amount` exceeds `participant`'s `stake`.
    error SlashExceedsStake(address participant, uint256 amount, uint256 stake);
    /// @notice A batch of `size` exceeds {MAX_BATCH}.
    error BatchTooLarge(uint256 size, uint256 max);
    /// @notice `participant` has no stake to withdraw.
    error NothingToWithdraw(address participant);
    /// @notice `participant` was active recently enough: it cannot be suspended before `activeUntil`.
    error NotInactive(address participant, uint256 activeUntil);
    /// @notice Round `roundId`, in which `participant` took part, is not recorded on the ledger: its slashes may
    /// still come. (If the ledger's ids went past it unrecorded, only governance's {releaseExit} unlocks.)
    error ParticipationUnposted(address participant, uint256 roundId);
    /// @notice `amount` is pending against `participant` until `executableAt`: no withdrawal before it is
    /// executed or cancelled.
    error SlashPending(address participant, uint256 amount, uint256 executableAt);
    /// @notice Nothing is pending against `participant`.
    error NoPendingSlash(address participant);
    /// @notice The pending slash of `participant` cannot be executed before `executableAt`.
    error SlashWindowOpen(address participant, uint256 executableAt);
    /// @notice The pending slash of `participant` became executable at `executableAt`: too late to cancel.
    error SlashWindowClosed(address participant, uint256 executableAt);
    /// @notice The caller is neither a guardian nor the admin (the timelock).
    error NotGuardian(address caller);
    /// @notice `account` holds neither the aggregator nor the slasher role.
    error NotOperator(address account);
    /// @notice A setting outside `min`..`max`.
    error SettingOutOfRange(uint256 value, uint256 min, uint256 max);
    /// @notice `roundId` is above {MAX_ROUND_ID}.
    error RoundIdOutOfRange(uint256 roundId, uint256 max);

    /// @param token_ The staking token (RewardToken).
    /// @param params_ Governed parameters (minimum stake, unbonding period, activity timeout).
    /// @param ledger_ The ContributionLedger (its latest round id gates withdrawals).
    /// @param admin DEFAULT_ADMIN_ROLE holder (the timelock after deployment).
    /// @param treasury_ Receiver of slashed stake.
    constructor(
        IERC20 token_,
        ProtocolParameters params_,
        ContributionLedger ledger_,
        address admin,
        address treasury_
    ) {
        if (
            address(token_) == address(0) ||
            address(params_) == address(0) ||
            address(ledger_) == address(0) ||
            admin == address(0) ||
            treasury_ == address(0)
        ) revert ZeroAddress();
        token = token_;
        params = params_;
        ledger = ledger_;
        treasury = treasury_;
        slashDelay = 1 days;
        promptSlashBps = 1_000;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ---------------------------------------------------------------- participants

    /// @notice Enroll the caller with `amount` staked (needs an ERC-20 allowance). Also re-enrolls an exited
    /// participant whose stake was withdrawn; its Byzantine and slash counts are kept.
    /// @param amount Stake in token wei, at least the governed minimum.
    function enroll(uint256 amount) public {
        Participant storage p = _participants[msg.sender];
        Status previous = p.status;
        if (previous != Status.None && !(previous == Status.Exited && p.stake == 0)) {
            revert AlreadyEnrolled(msg.sender, previous);
        }
        uint256 minimum = params.get(ProtocolParameters.Param.MinStake);
        if (amount < minimum) revert StakeBelowMinimum(amount, minimum);
        p.stake = uint128(amount);
        p.enrolledAt = uint64(block.timestamp);
        p.exitRequestedAt = 0;
        p.unlockRound = 0;
        p.lastRound = 0;
        p.lastActiveAt = uint64(block.timestamp);
        p.inactive = false;
        p.status = Status.Active;
        activeCount += 1;
        totalStaked += amount;
        emit Enrolled(msg.sender, amount);
        emit StatusChanged(msg.sender, previous, Status.Active);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice {enroll} with an EIP-2612 permit instead of a prior approval. A permit that was already used
    /// (for example front-run) is tolerated if the allowance is in place.
    function enrollWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external {
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        enroll(amount);
    }

    /// @notice Add stake while active, suspended or slashed (to meet the minimum again before a reinstatement).
    /// @param amount Token wei to add (needs an allowance).
    function addStake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Participant storage p = _participants[msg.sender];
        Status status = p.status;
        if (status != Status.Active && status != Status.Suspended && status != Status.Slashed) {
            revert InvalidStatus(msg.sender, status);
        }
        p.stake += uint128(amount);
        totalStaked += amount;
        emit StakeAdded(msg.sender, amount, p.stake);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Leave the platform. The stake becomes withdrawable after the unbonding period and once the
    /// ledger has recorded a round after this request; it stays slashable until then.
    function requestExit() external {
        Participant storage p = _participants[msg.sender];
        Status previous = p.status;
        if (previous != Status.Active && previous != Status.Suspended && previous != Status.Slashed) {
            revert InvalidStatus(msg.sender, previous);
        }
        if (previous == Status.Active) activeCount -= 1;
        uint256 unlockRound = uint256(ledger.latestRoundId()) + 1;
        p.status = Status.Exited;
        p.exitRequestedAt = uint64(block.timestamp);
        p.unlockRound = uint64(unlockRound);
        uint256 withdrawableAt = block.timestamp + params.get(ProtocolParameters.Param.UnbondingPeriod);
        emit StatusChanged(msg.sender, previous, Status.Exited);
        emit ExitRequested(msg.sender, withdrawableAt, unlockRound);
    }

    /// @notice Withdraw the remaining stake once the unbonding period has passed, the ledger has recorded a
    /// round after the exit request and the latest round the participant took part in, and no slash is
    /// pending against it.
    function withdraw() external {
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.Exited) revert InvalidStatus(msg.sender, p.status);
        uint256 withdrawableAt = uint256(p.exitRequestedAt) + params.get(ProtocolParameters.Param.UnbondingPeriod);
        if (block.timestamp < withdrawableAt) revert UnbondingNotOver(msg.sender, withdrawableAt);
        uint256 latest = ledger.latestRoundId();
        if (latest < p.unlockRound) revert RoundsPending(msg.sender, p.unlockRound, latest);
        // A round at or after the exit's unlock round must be recorded itself: its slashes are posted before
        // it, and a jump of the ledger's ids past it would otherwise unlock the stake with them unposted.
        uint256 lastRound = p.lastRound;
        if (lastRound != 0 && lastRound >= p.unlockRound && !ledger.isRecorded(lastRound)) {
            revert ParticipationUnposted(msg.sender, lastRound);
        }
        PendingSlash storage q = _pendingSlashes[msg.sender];
        if (q.amount > 0) revert SlashPending(msg.sender, q.amount, q.executableAt);
        uint256 amount = p.stake;
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        p.stake = 0;
        totalStaked -= amount;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Return from a suspension for inactivity (the caller's own); needs the minimum stake.
    function resume() external {
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.Suspended || !p.inactive) revert InvalidStatus(msg.sender, p.status);
        _reactivate(msg.sender, p);
    }

    // ---------------------------------------------------------------- aggregator, slasher, anyone

    /// @notice Slash `amount` of a participant's stake (to the treasury). Works in every status that still
    /// holds stake: Active and Suspended become Slashed, Slashed stays Slashed, Exited stays Exited (its
    /// unbonding goes on). The part up to {promptSlashAllowance} (conclusive evidence: {promptSlashBps} of the
    /// stake, once per {slashDelay}) is taken at once; the rest is queued for {slashDelay}, during which a
    /// guardian may cancel it ({cancelSlashes}) and the participant cannot withdraw, then anyone executes it
    /// ({executeSlash}).
    /// @param participant The participant.
    /// @param amount Token wei, at most its stake.
    /// @param reason A short code, e.g. keccak256("fedledger:round:7:low_honesty"), for indexers.
    function slash(address participant, uint256 amount, bytes32 reason) external onlyRole(SLASHER_ROLE) {
        if (amount == 0) revert ZeroAmount();
        Participant storage p = _participants[participant];
        if (p.status == Status.None) revert NotEnrolled(participant);
        uint256 stake = p.stake;
        if (amount > stake) revert SlashExceedsStake(participant, amount, stake);
        PendingSlash storage q = _pendingSlashes[participant];
        uint256 prompt = _promptAllowance(q, stake);
        if (prompt > amount) prompt = amount;
        if (amount > prompt) {
            uint256 pending = uint256(q.amount) + (amount - prompt);
            if (pending > stake - prompt) pending = stake - prompt;
            uint256 executableAt = block.timestamp + slashDelay;
            q.amount = uint128(pending);
            q.executableAt = uint40(executableAt);
            emit SlashQueued(participant, amount - prompt, reason, executableAt, pending);
        }
        if (prompt > 0) {
            q.lastPromptAt = uint40(block.timestamp);
            _take(participant, p, prompt, reason);
        }
    }

    /// @notice Execute the slash pending against `participant` once its window is over (anyone may): takes
    /// the pending amount, or the whole stake if less is left.
    function executeSlash(address participant) external {
        PendingSlash storage q = _pendingSlashes[participant];
        uint256 amount = q.amount;
        if (amount == 0) revert NoPendingSlash(participant);
        if (block.timestamp < q.executableAt) revert SlashWindowOpen(participant, q.executableAt);
        q.amount = 0;
        q.executableAt = 0;
        Participant storage p = _participants[participant];
        // Never more than is left: a queued amount is capped at the stake when queued, and prompt slashes may
        // have taken part of it since.
        _take(participant, p, amount < p.stake ? amount : p.stake, PENDING_SLASH_REASON);
    }

    /// @notice Cancel the slashes pending against each listed participant, during their window (e.g. queued
    /// with a stolen slasher key). Only a guardian or the admin (the timelock).
    /// @param participants At most {MAX_BATCH}; each must have a slash pending in its window.
    /// @param reason A short code for indexers.
    function cancelSlashes(address[] calldata participants, bytes32 reason) external {
        _checkGuardian();
        if (participants.length > MAX_BATCH) revert BatchTooLarge(participants.length, MAX_BATCH);
        for (uint256 i = 0; i < participants.length; ++i) {
            address who = participants[i];
            PendingSlash storage q = _pendingSlashes[who];
            if (q.amount == 0) revert NoPendingSlash(who);
            if (block.timestamp >= q.executableAt) revert SlashWindowClosed(who, q.executableAt);
            emit SlashCancelled(who, q.amount, msg.sender, reason);
            q.amount = 0;
            q.executableAt = 0;
        }
    }

    /// @notice Suspend an active participant (a decision of the slasher role, e.g. an incident). A guardian
    /// reverses it ({reinstate}).
    function suspend(address participant) external onlyRole(SLASHER_ROLE) {
        Participant storage p = _participants[participant];
        if (p.status != Status.Active) revert InvalidStatus(participant, p.status);
        p.status = Status.Suspended;
        activeCount -= 1;
        emit StatusChanged(participant, Status.Active, Status.Suspended);
    }

    /// @notice Reinstate a participant whose stake still meets the minimum: a suspended one (the slasher role,
    /// a guardian or the admin), or a slashed one (a guardian or the admin only: undoing what a stolen slasher
    /// key did; the tokens it took stay in the treasury, for governance to return).
    function reinstate(address participant) external {
        bool guardian = hasRole(GUARDIAN_ROLE, msg.sender) || hasRole(DEFAULT_ADMIN_ROLE, msg.sender);
        if (!guardian && !hasRole(SLASHER_ROLE, msg.sender)) revert NotGuardian(msg.sender);
        Participant storage p = _participants[participant];
        Status status = p.status;
        if (status != Status.Suspended && !(guardian && status == Status.Slashed)) {
            revert InvalidStatus(participant, status);
        }
        _reactivate(participant, p);
    }

    /// @notice Take the aggregator and slasher roles away from `account` at once (a stolen key: the guardian
    /// need not wait for a governance vote). Only a guardian or the admin; only governance grants them again.
    /// @param account The operator account.
    /// @param reason A short code for indexers.
    function revokeOperator(address account, bytes32 reason) external {
        _checkGuardian();
        bool aggregator = _revokeRole(AGGREGATOR_ROLE, account);
        bool slasher = _revokeRole(SLASHER_ROLE, account);
        if (!aggregator && !slasher) revert NotOperator(account);
        emit OperatorRevoked(account, msg.sender, reason);
    }

    /// @notice Count one Byzantine detection for each listed participant (bounded by {MAX_BATCH}).
    function recordByzantine(address[] calldata participants) external onlyRole(AGGREGATOR_ROLE) {
        if (participants.length > MAX_BATCH) revert BatchTooLarge(participants.length, MAX_BATCH);
        for (uint256 i = 0; i < participants.length; ++i) {
            Participant storage p = _participants[participants[i]];
            if (p.status == Status.None) revert NotEnrolled(participants[i]);
            p.byzantineCount += 1;
            emit ByzantineRecorded(participants[i], p.byzantineCount);
        }
    }

    /// @notice Record that the listed participants took part in round `roundId` now: the evidence
    /// {suspendInactive} checks, and the round an exit waits for ({withdraw}). The aggregator sends it when a
    /// round closes, before the round is posted, for every participant in it.
    /// @param roundId The round (at most {MAX_ROUND_ID}; 0 records the activity only). A participant's
    /// `lastRound` only grows.
    /// @param participants At most {MAX_BATCH} enrolled (any status) participants.
    function markActive(uint256 roundId, address[] calldata participants) external onlyRole(AGGREGATOR_ROLE) {
        if (roundId > MAX_ROUND_ID) revert RoundIdOutOfRange(roundId, MAX_ROUND_ID);
        if (participants.length > MAX_BATCH) revert BatchTooLarge(participants.length, MAX_BATCH);
        for (uint256 i = 0; i < participants.length; ++i) {
            Participant storage p = _participants[participants[i]];
            if (p.status == Status.None) revert NotEnrolled(participants[i]);
            p.lastActiveAt = uint64(block.timestamp);
            if (roundId > p.lastRound) p.lastRound = uint32(roundId);
            emit ActivityRecorded(participants[i], roundId, block.timestamp);
        }
    }

    /// @notice Suspend active participants idle for longer than the governed activity timeout. Anyone may
    /// call it: the evidence is on-chain (each one's `lastActiveAt`), and a participant suspended this way
    /// may {resume} itself. Reverts with {NotInactive} if any listed participant is not idle that long.
    function suspendInactive(address[] calldata participants) external {
        if (participants.length > MAX_BATCH) revert BatchTooLarge(participants.length, MAX_BATCH);
        uint256 timeout = params.get(ProtocolParameters.Param.ActivityTimeout);
        for (uint256 i = 0; i < participants.length; ++i) {
            address who = participants[i];
            Participant storage p = _participants[who];
            if (p.status != Status.Active) revert InvalidStatus(who, p.status);
            uint256 activeUntil = uint256(p.lastActiveAt) + timeout;
            if (block.timestamp <= activeUntil) revert NotInactive(who, activeUntil);
            p.status = Status.Suspended;
            p.inactive = true;
            activeCount -= 1;
            emit StatusChanged(who, Status.Active, Status.Suspended);
            emit SuspendedForInactivity(who, p.lastActiveAt);
        }
    }

    /// @notice Lift the round conditions of an exit (the stake still waits for the unbonding period and for a
    /// pending slash). For governance when the platform stopped recording rounds, or its ids went past a
    /// round the participant took part in, so stake cannot be stranded. Only the admin.
    function releaseExit(address participant) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Participant storage p = _participants[participant];
        if (p.status != Status.Exited) revert InvalidStatus(participant, p.status);
        p.unlockRound = 0;
        p.lastRound = 0;
        emit ExitReleased(participant);
    }

    /// @notice Change where slashed stake goes. Only the admin (the timelock).
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        emit TreasuryChanged(treasury, treasury_);
        treasury = treasury_;
    }

    /// @notice Change {slashDelay}. Only the admin (the timelock).
    /// @param delay Seconds, {MIN_SLASH_DELAY}..{MAX_SLASH_DELAY}.
    function setSlashDelay(uint256 delay) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (delay < MIN_SLASH_DELAY || delay > MAX_SLASH_DELAY) {
            revert SettingOutOfRange(delay, MIN_SLASH_DELAY, MAX_SLASH_DELAY);
        }
        emit SlashDelayChanged(slashDelay, delay);
        slashDelay = uint32(delay);
    }

    /// @notice Change {promptSlashBps}. Only the admin (the timelock).
    /// @param bps Basis points of a stake, 0..{MAX_PROMPT_SLASH_BPS} (0: every slash waits its window).
    function setPromptSlashBps(uint256 bps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bps > MAX_PROMPT_SLASH_BPS) revert SettingOutOfRange(bps, 0, MAX_PROMPT_SLASH_BPS);
        emit PromptSlashBpsChanged(promptSlashBps, bps);
        promptSlashBps = uint16(bps);
    }

    function _checkGuardian() private view {
        if (!hasRole(GUARDIAN_ROLE, msg.sender) && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotGuardian(msg.sender);
        }
    }

    /// @dev What a slash may take at once: {promptSlashBps} of `stake`, if no prompt slash in the last
    /// {slashDelay}.
    function _promptAllowance(PendingSlash storage q, uint256 stake) private view returns (uint256) {
        if (block.timestamp < uint256(q.lastPromptAt) + slashDelay) return 0;
        return (stake * promptSlashBps) / 10_000;
    }

    /// @dev Moves `amount` of the stake to the treasury (effects first, the transfer last).
    function _take(address participant, Participant storage p, uint256 amount, bytes32 reason) private {
        Status previous = p.status;
        p.stake -= uint128(amount);
        p.slashCount += 1;
        totalStaked -= amount;
        if (previous == Status.Active || previous == Status.Suspended) {
            if (previous == Status.Active) activeCount -= 1;
            p.status = Status.Slashed;
            p.inactive = false;
            emit StatusChanged(participant, previous, Status.Slashed);
        }
        emit Slashed(participant, amount, reason, p.stake);
        token.safeTransfer(treasury, amount);
    }

    function _reactivate(address participant, Participant storage p) private {
        uint256 minimum = params.get(ProtocolParameters.Param.MinStake);
        if (p.stake < minimum) revert StakeBelowMinimum(p.stake, minimum);
        Status previous = p.status;
        activeCount += 1;
        p.status = Status.Active;
        p.inactive = false;
        p.lastActiveAt = uint64(block.timestamp);
        emit StatusChanged(participant, previous, Status.Active);
    }

    // ---------------------------------------------------------------- views

    /// @notice The full record of a participant.
    function participantOf(address participant) external view returns (Participant memory) {
        return _participants[participant];
    }

    /// @notice Whether the participant may take part in rounds.
    function isActive(address participant) external view returns (bool) {
        return _participants[participant].status == Status.Active;
    }

    /// @notice The slash pending against a participant, and when it was last slashed without a window.
    function pendingSlashOf(address participant) external view returns (PendingSlash memory) {
        return _pendingSlashes[participant];
    }

    /// @notice What a {slash} of `participant` would take at once now (the rest would be queued).
    function promptSlashAllowance(address participant) external view returns (uint256) {
        return _promptAllowance(_pendingSlashes[participant], _participants[participant].stake);
    }

    /// @notice Current stake of a participant.
    function stakeOf(address participant) external view returns (uint256) {
        return _participants[participant].stake;
    }
}
