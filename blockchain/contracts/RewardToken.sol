// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title RewardToken
/// @notice The platform's reward and governance token (ERC-20 with EIP-2612 permits and ERC-5805 votes).
/// @dev After the genesis allocation, new tokens come only from the RewardDistributor (MINTER_ROLE), when a
/// participant claims a reward that a recorded round assigned to it.
contract RewardToken is ERC20, ERC20Permit, ERC20Votes, AccessControl {
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @notice The admin, or the recipient of a non-zero genesis allocation, was the zero address.
    error ZeroAddress();

    /// @param name_ Token name.
    /// @param symbol_ Token symbol.
    /// @param admin Receives DEFAULT_ADMIN_ROLE (the deploy script hands it to the timelock).
    /// @param genesisRecipient Receives the genesis allocation (the treasury in production).
    /// @param genesisAmount Genesis allocation in token wei (may be zero).
    constructor(
        string memory name_,
        string memory symbol_,
        address admin,
        address genesisRecipient,
        uint256 genesisAmount
    ) ERC20(name_, symbol_) ERC20Permit(name_) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (genesisAmount > 0) {
            if (genesisRecipient == address(0)) revert ZeroAddress();
            _mint(genesisRecipient, genesisAmount);
        }
    }

    /// @notice Mint reward tokens. Only the RewardDistributor holds MINTER_ROLE.
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
