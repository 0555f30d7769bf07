"""The development chain's well-known accounts.

Hardhat (and Anvil, Ganache in deterministic mode) derive their funded accounts from one public
mnemonic. Those keys are public knowledge: fedledger uses them on the dev chain only, and
:func:`is_dev_private_key` lets the settings refuse them anywhere else.
"""

from __future__ import annotations

from functools import lru_cache

from eth_account import Account

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 20

# Roles of the dev accounts, by index, shared by the deploy script, the launcher and the tests.
DEPLOYER_INDEX = 0
AGGREGATOR_INDEX = 1
MODEL_SIGNER_INDEX = 2
FIRST_ORGANIZATION_INDEX = 3


@lru_cache
def dev_private_keys() -> tuple[str, ...]:
    """The 0x-prefixed private keys of the dev chain's funded accounts, in Hardhat's order."""
    Account.enable_unaudited_hdwallet_features()
    return tuple(
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.to_0x_hex()
        for i in range(DEV_ACCOUNT_COUNT)
    )


def dev_private_key(index: int) -> str:
    """The dev account ``index``'s private key (see the ``*_INDEX`` roles above)."""
    return dev_private_keys()[index]


def _normalise(key: str) -> str:
    key = key.strip().lower()
    return key if key.startswith("0x") else "0x" + key


def is_dev_private_key(key: str) -> bool:
    """Whether ``key`` (0x or not, any case) is a public dev key, which the settings refuse off dev chains."""
    return _normalise(key) in dev_private_keys()


def is_dev_address(address: str) -> bool:
    """Whether ``address`` (any case) is one of the public dev accounts: its key is in every Hardhat install."""
    from eth_account import Account

    wanted = address.strip().lower()
    return any(Account.from_key(key).address.lower() == wanted for key in dev_private_keys())
