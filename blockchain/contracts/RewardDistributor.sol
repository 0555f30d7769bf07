// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {RewardToken} from "./RewardToken.sol";
import {ContributionLedger} from "./ContributionLedger.sol";

/// @title RewardDistributor
/// @notice Pays rewards: each participant claims (mints) its own reward of a recorded round with a Merkle proof
/// against the round's root in the ContributionLedger, once, after the round's dispute window, and never more
/// than the round's recorded total.
/// @dev Leaf = keccak256(bytes.concat(keccak256(abi.encode(roundId, account, amount)))), OpenZeppelin's
/// double-hashed leaf (no second-preimage confusion with inner nodes); sorted-pair hashing as MerkleProof.
contract RewardDistributor {
    /// @notice Most rounds one {claimMany} pays.
    uint256 public constant MAX_CLAIMS = 64;

    RewardToken public immutable token;
    ContributionLedger public immutable ledger;

    /// @dev account => (roundId >> 8) => bitmap of claimed rounds. Round ids increase, so an account's claims
    /// mostly fall in a word it already wrote: a claim flag costs ~5k gas instead of a fresh 22k slot.
    mapping(address => mapping(uint256 => uint256)) private _claimedBits;

    /// @notice `amount` was minted to `account` for `roundId`.
    event Claimed(uint256 indexed roundId, address indexed account, uint256 amount);

    /// @notice A constructor argument was the zero address.
    error ZeroAddress();
    /// @notice `account` already claimed its reward of `roundId`.
    error AlreadyClaimed(uint256 roundId, address account);
    /// @notice A {claimMany} batch of `size` rounds is empty, too large or its arrays differ in length.
    error BadClaimBatch(uint256 size);
    /// @notice The proof does not show a leaf (roundId, account, amount) under the round's root.
    error InvalidProof(uint256 roundId, address account, uint256 amount);

    // The ledger's refusals of a claim, declared here too (same selectors) so a client reading this contract's
    // ABI decodes them; the ledger raises them through {claim}.
    /// @notice See ContributionLedger.NoRewards: `roundId` pays nothing.
    error NoRewards(uint256 roundId);
    /// @notice See ContributionLedger.DisputeWindowOpen: claims open at `claimableAt`.
    error DisputeWindowOpen(uint256 roundId, uint256 claimableAt);
    /// @notice See ContributionLedger.RewardsAreCancelled: the round's rewards were cancelled.
    error RewardsAreCancelled(uint256 roundId);
    /// @notice See ContributionLedger.RoundTotalExceeded: the round's total would be exceeded.
    error RoundTotalExceeded(uint256 roundId, uint256 claimed, uint256 total);

    /// @param token_ The reward token (this contract needs its MINTER_ROLE).
    /// @param ledger_ The ContributionLedger holding the rounds' roots, totals and claim windows.
    constructor(RewardToken token_, ContributionLedger ledger_) {
        if (address(token_) == address(0) || address(ledger_) == address(0)) revert ZeroAddress();
        token = token_;
        ledger = ledger_;
    }

    /// @notice Claim `amount` for `account` in `roundId`; tokens are minted to `account` (anyone may relay).
    /// Reverts with the ledger's NoRewards, RewardsAreCancelled, DisputeWindowOpen or RoundTotalExceeded
    /// when the round cannot pay.
    /// @param roundId The round.
    /// @param account The leaf's account, which receives the tokens.
    /// @param amount The leaf's amount in token wei.
    /// @param proof Sibling hashes from the leaf to the root.
    function claim(uint256 roundId, address account, uint256 amount, bytes32[] calldata proof) external {
        _claim(roundId, account, amount, proof);
        token.mint(account, amount);
    }

    /// @notice Claim several rounds for one account with a single mint (the token's vote checkpoints, most of
    /// a claim's gas, are then written once). Same checks as {claim} for each round.
    /// @param roundIds The rounds (at most {MAX_CLAIMS}).
    /// @param account The account, which receives the tokens.
    /// @param amounts The leaves' amounts, one per round.
    /// @param proofs The proofs, one per round.
    function claimMany(
        uint256[] calldata roundIds,
        address account,
        uint256[] calldata amounts,
        bytes32[][] calldata proofs
    ) external {
        uint256 n = roundIds.length;
        if (n == 0 || n > MAX_CLAIMS || amounts.length != n || proofs.length != n) revert BadClaimBatch(n);
        uint256 total;
        for (uint256 i = 0; i < n; ++i) {
            _claim(roundIds[i], account, amounts[i], proofs[i]);
            total += amounts[i];
        }
        token.mint(account, total);
    }

    function _claim(uint256 roundId, address account, uint256 amount, bytes32[] calldata proof) private {
        uint256 word = roundId >> 8;
        uint256 bit = 1 << (roundId & 0xff);
        uint256 bits = _claimedBits[account][word];
        if (bits & bit != 0) revert AlreadyClaimed(roundId, account);
        bytes32 root = ledger.consumeRewards(roundId, amount);
        bytes32 leaf;
        assembly ("memory-safe") {
            // keccak256(bytes.concat(keccak256(abi.encode(roundId, account, amount)))), in free memory.
            let m := mload(0x40)
            mstore(m, roundId)
            mstore(add(m, 0x20), account)
            mstore(add(m, 0x40), amount)
            mstore(m, keccak256(m, 0x60))
            leaf := keccak256(m, 0x20)
        }
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof(roundId, account, amount);
        _claimedBits[account][word] = bits | bit;
        emit Claimed(roundId, account, amount);
    }

    /// @notice Whether `account` has claimed its reward of `roundId`.
    function claimed(uint256 roundId, address account) external view returns (bool) {
        return _claimedBits[account][roundId >> 8] & (1 << (roundId & 0xff)) != 0;
    }

    /// @notice The rewards record of a round, as the ledger holds it.
    /// @return root The Merkle root (zero if the round paid nothing).
    /// @return total Most that may be minted for the round.
    /// @return claimedAmount Minted so far.
    /// @return claimableAt When claims open.
    /// @return cancelled Whether the rewards were cancelled.
    function roundRewards(
        uint256 roundId
    ) external view returns (bytes32 root, uint256 total, uint256 claimedAmount, uint256 claimableAt, bool cancelled) {
        ContributionLedger.Round memory r = ledger.roundOf(roundId);
        return (r.rewardsRoot, r.totalReward, r.claimed, r.claimableAt, r.cancelled);
    }
}
