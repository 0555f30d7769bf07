"""Strict Ethereum address validation.

``eth_utils.is_address`` (eth-utils >= 5) accepts a mixed-case address whose EIP-55 checksum is wrong,
20 raw bytes, and hex without ``0x``. A mistyped address with a wrong checksum must be refused, not
silently lowercased into a different account, so fedledger.crypto validates addresses here instead.
"""

from __future__ import annotations

import re

from eth_utils import is_checksum_address, to_checksum_address

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def is_valid_address(value: object) -> bool:
    """A ``0x`` + 40 hex string, all lowercase, all uppercase, or mixed case with a correct EIP-55 checksum."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        return False
    digits = value[2:]
    if digits == digits.lower() or digits == digits.upper():
        return True
    return is_checksum_address(value)


def checksummed(value: str) -> str:
    """The EIP-55 form of an address that :func:`is_valid_address` accepts."""
    return to_checksum_address(value)
