// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";
import {ContributionLedger} from "./ContributionLedger.sol";

/// @title ParticipantRegistry
/// @notice Organizations enroll their wallet by staking reward tokens. Stake cannot flee a pending slash: it
/// leaves only after an unbonding period that starts with {requestExit} *and* once the ledger has recorded a
/// round after the exit request (so every round the organization could have submitted to is posted, and its
/// slashes with it); it stays slashable until withdrawn. A slashed address keeps its record (Byzantine and slash
/// counts) when it enrolls again. Active organizations idle past the governed activity timeout can be suspended
/// by anyone, and resume themselves.
/// @dev Every function updates its state before it moves tokens (checks-effects-interactions), and the token
/// is the platform's RewardToken, which calls no hooks: there is no reentrancy path.
contract ParticipantRegistry is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice Bound on batches ({recordByzantine}, {markActive}, {suspendInactive}).
    uint256 public constant MAX_BATCH = 2048;

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
        uint64 lastActiveAt;
        bool inactive;
        Status status;
    }

    IERC20 public immutable token;
    ProtocolParameters public immutable params;
    /// @notice The ledger whose recorded rounds gate withdrawals.
    ContributionLedger public immutable ledger;
    /// @notice Where slashed stake goes (the timelock treasury).
    address public treasury;

    mapping(address => Participant) private _participants;
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
    /// @notice The aggregator saw `participant` take part in a round at `at`.
    event ActivityRecorded(address indexed participant, uint256 at);
    /// @notice `participant` was suspended for inactivity; it had been idle since `lastActiveAt`.
    event SuspendedForInactivity(address indexed participant, uint256 lastActiveAt);
    /// @notice `participant`'s status changed from `previous` to `current`.
    event StatusChanged(address indexed participant, Status previous, Status current);
    /// @notice Slashed stake now goes to `current` instead of `previous`.
    event TreasuryChanged(address previous, address current);

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

    /// @notice Add stake while active or suspended.
    /// @param amount Token wei to add (needs an allowance).
    function addStake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.Active && p.status != Status.Suspended) revert InvalidStatus(msg.sender, p.status);
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

    /// @notice Withdraw the remaining stake once the unbonding period has passed and the ledger has recorded
    /// a round after the exit request.
    function withdraw() external {
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.Exited) revert InvalidStatus(msg.sender, p.status);
        uint256 withdrawableAt = uint256(p.exitRequestedAt) + params.get(ProtocolParameters.Param.UnbondingPeriod);
        if (block.timestamp < withdrawableAt) revert UnbondingNotOver(msg.sender, withdrawableAt);
        uint256 latest = ledger.latestRoundId();
        if (latest < p.unlockRound) revert RoundsPending(msg.sender, p.unlockRound, latest);
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
    /// unbonding goes on).
    /// @param participant The participant.
    /// @param amount Token wei, at most its stake.
    /// @param reason A short code, e.g. keccak256("fedledger:round:7:low_honesty"), for indexers.
    function slash(address participant, uint256 amount, bytes32 reason) external onlyRole(SLASHER_ROLE) {
        if (amount == 0) revert ZeroAmount();
        Participant storage p = _participants[participant];
        Status previous = p.status;
        if (previous == Status.None) revert NotEnrolled(participant);
        if (amount > p.stake) revert SlashExceedsStake(participant, amount, p.stake);
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

    /// @notice Suspend an active participant (a decision of the slasher role, e.g. an incident).
    function suspend(address participant) external onlyRole(SLASHER_ROLE) {
        Participant storage p = _participants[participant];
        if (p.status != Status.Active) revert InvalidStatus(participant, p.status);
        p.status = Status.Suspended;
        activeCount -= 1;
        emit StatusChanged(participant, Status.Active, Status.Suspended);
    }

    /// @notice Reinstate a suspended participant whose stake still meets the minimum.
    function reinstate(address participant) external onlyRole(SLASHER_ROLE) {
        Participant storage p = _participants[participant];
        if (p.status != Status.Suspended) revert InvalidStatus(participant, p.status);
        _reactivate(participant, p);
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

    /// @notice Record that the listed participants took part in a round now (the evidence {suspendInactive}
    /// checks). The aggregator sends it when a participant's last record is older than half the activity
    /// timeout, so it costs about one storage write per participant per half-timeout, not per round.
    function markActive(address[] calldata participants) external onlyRole(AGGREGATOR_ROLE) {
        if (participants.length > MAX_BATCH) revert BatchTooLarge(participants.length, MAX_BATCH);
        for (uint256 i = 0; i < participants.length; ++i) {
            Participant storage p = _participants[participants[i]];
            if (p.status == Status.None) revert NotEnrolled(participants[i]);
            p.lastActiveAt = uint64(block.timestamp);
            emit ActivityRecorded(participants[i], block.timestamp);
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

    /// @notice Lift the round condition of an exit (the stake still waits for the unbonding period). For
    /// governance when the platform stopped recording rounds, so stake cannot be stranded. Only the admin.
    function releaseExit(address participant) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Participant storage p = _participants[participant];
        if (p.status != Status.Exited) revert InvalidStatus(participant, p.status);
        p.unlockRound = 0;
        emit ExitReleased(participant);
    }

    /// @notice Change where slashed stake goes. Only the admin (the timelock).
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        emit TreasuryChanged(treasury, treasury_);
        treasury = treasury_;
    }

    function _reactivate(address participant, Participant storage p) private {
        uint256 minimum = params.get(ProtocolParameters.Param.MinStake);
        if (p.stake < minimum) revert StakeBelowMinimum(p.stake, minimum);
        p.status = Status.Active;
        p.inactive = false;
        p.lastActiveAt = uint64(block.timestamp);
        activeCount += 1;
        emit StatusChanged(participant, Status.Suspended, Status.Active);
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

    /// @notice Current stake of a participant.
    function stakeOf(address participant) external view returns (uint256) {
        return _participants[participant].stake;
    }
}
