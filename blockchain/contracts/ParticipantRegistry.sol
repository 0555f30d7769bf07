// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";

/// @title ParticipantRegistry
/// @notice Organizations enroll their wallet by staking reward tokens. Stake leaves only after an unbonding
/// period that starts with {requestExit}, so it cannot flee a pending slash: slashing works until withdrawal.
contract ParticipantRegistry is AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");

    /// @notice Bound on {recordByzantine} batches (a round never has more contributions than this).
    uint256 public constant MAX_BATCH = 2048;

    enum Status {
        None,
        Active,
        Suspended,
        Slashed,
        Exited
    }

    struct Participant {
        uint128 stake;
        uint64 enrolledAt;
        uint64 exitRequestedAt;
        uint32 byzantineCount;
        Status status;
    }

    IERC20 public immutable token;
    ProtocolParameters public immutable params;
    /// @notice Where slashed stake goes (the timelock treasury), or address(0) to burn it... see {slash}.
    address public treasury;

    mapping(address => Participant) private _participants;
    uint256 public activeCount;
    uint256 public totalStaked;

    event Enrolled(address indexed participant, uint256 stake);
    event StakeAdded(address indexed participant, uint256 amount, uint256 newStake);
    event ExitRequested(address indexed participant, uint256 withdrawableAt);
    event Withdrawn(address indexed participant, uint256 amount);
    event Slashed(address indexed participant, uint256 amount, bytes32 indexed reason, uint256 remainingStake);
    event ByzantineRecorded(address indexed participant, uint32 count);
    event StatusChanged(address indexed participant, Status previous, Status current);
    event TreasuryChanged(address previous, address current);

    error ZeroAddress();
    error ZeroAmount();
    error StakeBelowMinimum(uint256 stake, uint256 minimum);
    error AlreadyEnrolled(address participant, Status status);
    error NotEnrolled(address participant);
    error InvalidStatus(address participant, Status status);
    error UnbondingNotOver(address participant, uint256 withdrawableAt);
    error SlashExceedsStake(address participant, uint256 amount, uint256 stake);
    error BatchTooLarge(uint256 size, uint256 max);
    error NothingToWithdraw(address participant);

    /// @param token_ The staking token (RewardToken).
    /// @param params_ Governed parameters (minimum stake, unbonding period).
    /// @param admin DEFAULT_ADMIN_ROLE holder (the timelock after deployment).
    /// @param treasury_ Receiver of slashed stake.
    constructor(IERC20 token_, ProtocolParameters params_, address admin, address treasury_) {
        if (address(token_) == address(0) || address(params_) == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        if (treasury_ == address(0)) revert ZeroAddress();
        token = token_;
        params = params_;
        treasury = treasury_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ---------------------------------------------------------------- participants

    /// @notice Enroll the caller with `amount` staked (needs an ERC-20 allowance). Also re-enrolls an exited
    /// participant whose stake was withdrawn.
    function enroll(uint256 amount) public nonReentrant {
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.None && !(p.status == Status.Exited && p.stake == 0)) {
            revert AlreadyEnrolled(msg.sender, p.status);
        }
        uint256 minimum = params.get(ProtocolParameters.Param.MinStake);
        if (amount < minimum) revert StakeBelowMinimum(amount, minimum);
        token.safeTransferFrom(msg.sender, address(this), amount);
        Status previous = p.status;
        p.stake = uint128(amount);
        p.enrolledAt = uint64(block.timestamp);
        p.exitRequestedAt = 0;
        p.status = Status.Active;
        activeCount += 1;
        totalStaked += amount;
        emit Enrolled(msg.sender, amount);
        emit StatusChanged(msg.sender, previous, Status.Active);
    }

    /// @notice {enroll} with an EIP-2612 permit instead of a prior approval. A permit that was already used
    /// (for example front-run) is tolerated if the allowance is in place.
    function enrollWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external {
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        enroll(amount);
    }

    /// @notice Add stake while active or suspended.
    function addStake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.Active && p.status != Status.Suspended) revert InvalidStatus(msg.sender, p.status);
        token.safeTransferFrom(msg.sender, address(this), amount);
        p.stake += uint128(amount);
        totalStaked += amount;
        emit StakeAdded(msg.sender, amount, p.stake);
    }

    /// @notice Leave the platform: the stake becomes withdrawable after the unbonding period, and stays
    /// slashable until then.
    function requestExit() external {
        Participant storage p = _participants[msg.sender];
        Status previous = p.status;
        if (previous != Status.Active && previous != Status.Suspended && previous != Status.Slashed) {
            revert InvalidStatus(msg.sender, previous);
        }
        if (previous == Status.Active) activeCount -= 1;
        p.status = Status.Exited;
        p.exitRequestedAt = uint64(block.timestamp);
        uint256 withdrawableAt = block.timestamp + params.get(ProtocolParameters.Param.UnbondingPeriod);
        emit StatusChanged(msg.sender, previous, Status.Exited);
        emit ExitRequested(msg.sender, withdrawableAt);
    }

    /// @notice Withdraw the remaining stake once the unbonding period has passed.
    function withdraw() external nonReentrant {
        Participant storage p = _participants[msg.sender];
        if (p.status != Status.Exited) revert InvalidStatus(msg.sender, p.status);
        uint256 withdrawableAt = uint256(p.exitRequestedAt) + params.get(ProtocolParameters.Param.UnbondingPeriod);
        if (block.timestamp < withdrawableAt) revert UnbondingNotOver(msg.sender, withdrawableAt);
        uint256 amount = p.stake;
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        p.stake = 0;
        totalStaked -= amount;
        token.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    // ---------------------------------------------------------------- aggregator and slasher

    /// @notice Slash `amount` of a participant's stake (to the treasury) and mark it Slashed.
    /// @param reason A short code, e.g. bytes32("low_honesty"), for indexers and the dashboard.
    function slash(address participant, uint256 amount, bytes32 reason) external onlyRole(SLASHER_ROLE) nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Participant storage p = _participants[participant];
        if (p.status == Status.None) revert NotEnrolled(participant);
        if (amount > p.stake) revert SlashExceedsStake(participant, amount, p.stake);
        Status previous = p.status;
        p.stake -= uint128(amount);
        totalStaked -= amount;
        if (previous == Status.Active) activeCount -= 1;
        // An exiting participant stays Exited (its unbonding goes on); everyone else becomes Slashed.
        if (previous != Status.Exited) {
            p.status = Status.Slashed;
            emit StatusChanged(participant, previous, Status.Slashed);
        }
        token.safeTransfer(treasury, amount);
        emit Slashed(participant, amount, reason, p.stake);
    }

    /// @notice Suspend an active participant (e.g. offline past the activity timeout).
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
        uint256 minimum = params.get(ProtocolParameters.Param.MinStake);
        if (p.stake < minimum) revert StakeBelowMinimum(p.stake, minimum);
        p.status = Status.Active;
        activeCount += 1;
        emit StatusChanged(participant, Status.Suspended, Status.Active);
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

    /// @notice Change where slashed stake goes. Only the admin (the timelock).
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        emit TreasuryChanged(treasury, treasury_);
        treasury = treasury_;
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
