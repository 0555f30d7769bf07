// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {RewardToken} from "./RewardToken.sol";
import {ProtocolParameters} from "./ProtocolParameters.sol";

/// @title RewardDistributor
/// @notice Rewards of a round are one Merkle root posted with the round (one transaction per round, not per
/// participant); each participant claims (mints) its own with a proof.
/// @dev Leaf = keccak256(bytes.concat(keccak256(abi.encode(roundId, account, amount)))), OpenZeppelin's
/// double-hashed leaf (no second-preimage confusion with inner nodes); sorted-pair hashing as MerkleProof.
contract RewardDistributor is AccessControl {
    bytes32 public constant LEDGER_ROLE = keccak256("LEDGER_ROLE");

    struct RoundRewards {
        bytes32 root;
        uint128 total;
        uint128 claimed;
    }

    RewardToken public immutable token;
    ProtocolParameters public immutable params;

    mapping(uint256 => RoundRewards) private _rounds;
    mapping(uint256 => mapping(address => bool)) private _claimed;

    event RewardsRootPosted(uint256 indexed roundId, bytes32 root, uint256 total);
    event Claimed(uint256 indexed roundId, address indexed account, uint256 amount);

    error ZeroAddress();
    error RootAlreadyPosted(uint256 roundId);
    error UnknownRound(uint256 roundId);
    error BudgetExceeded(uint256 roundId, uint256 total, uint256 budget);
    error AlreadyClaimed(uint256 roundId, address account);
    error InvalidProof(uint256 roundId, address account, uint256 amount);
    error RoundTotalExceeded(uint256 roundId, uint256 claimed, uint256 total);

    constructor(RewardToken token_, ProtocolParameters params_, address admin) {
        if (address(token_) == address(0) || address(params_) == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        token = token_;
        params = params_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Post a round's rewards root. Only the ContributionLedger, inside recordRound.
    /// @param total Sum of all leaves' amounts; checked against the governed per-round budget, and no more than
    /// this is ever minted for the round whatever the root contains.
    function postRoot(uint256 roundId, bytes32 root, uint256 total) external onlyRole(LEDGER_ROLE) {
        if (_rounds[roundId].root != bytes32(0)) revert RootAlreadyPosted(roundId);
        uint256 budget = params.get(ProtocolParameters.Param.RoundRewardBudget);
        if (total > budget) revert BudgetExceeded(roundId, total, budget);
        _rounds[roundId] = RoundRewards({root: root, total: uint128(total), claimed: 0});
        emit RewardsRootPosted(roundId, root, total);
    }

    /// @notice Claim `amount` for `account` in `roundId`; tokens are minted to `account` (anyone may relay).
    function claim(uint256 roundId, address account, uint256 amount, bytes32[] calldata proof) external {
        RoundRewards storage r = _rounds[roundId];
        if (r.root == bytes32(0)) revert UnknownRound(roundId);
        if (_claimed[roundId][account]) revert AlreadyClaimed(roundId, account);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(roundId, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, r.root, leaf)) revert InvalidProof(roundId, account, amount);
        uint256 claimedAfter = uint256(r.claimed) + amount;
        if (claimedAfter > r.total) revert RoundTotalExceeded(roundId, claimedAfter, r.total);
        _claimed[roundId][account] = true;
        r.claimed = uint128(claimedAfter);
        emit Claimed(roundId, account, amount);
        token.mint(account, amount);
    }

    /// @notice Whether `account` has claimed its reward of `roundId`.
    function claimed(uint256 roundId, address account) external view returns (bool) {
        return _claimed[roundId][account];
    }

    /// @notice The rewards record of a round (root, total, claimed so far).
    function roundRewards(uint256 roundId) external view returns (RoundRewards memory) {
        return _rounds[roundId];
    }
}
