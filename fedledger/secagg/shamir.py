"""t-of-n Shamir sharing of 32-byte secrets over pycryptodome's GF(2^128) Shamir.

pycryptodome shares 16-byte secrets only, so a 32-byte seed or X25519 private key is split as two halves,
each with its own random polynomial, and a share is the two 16-byte evaluations at the same index
(Flower's ``secure_aggregation.crypto.shamir`` does the same with padding; a fixed 32-byte secret needs none).
Shamir alone cannot tell a wrong share from a right one: :mod:`.protocol` checks every share against its
dealer's signed commitment before combining.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from Crypto.Protocol.SecretSharing import Shamir

from fedledger.secagg.errors import SecAggError, TooManyDropouts

SECRET_BYTES = 32
_HALF = SECRET_BYTES // 2


@dataclass(frozen=True)
class Share:
    """Share number ``index`` (1-based, the holder's position in its group + 1) of a 32-byte secret."""

    index: int
    value: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.index <= 255:
            raise SecAggError(f"share index must be in 1..255, got {self.index}")
        if len(self.value) != SECRET_BYTES:
            raise SecAggError(f"a share is {SECRET_BYTES} bytes, got {len(self.value)}")

    def __repr__(self) -> str:
        # A share is secret material: never print it.
        return f"Share(index={self.index})"


def split_secret(secret: bytes, threshold: int, count: int) -> list[Share]:
    """``count`` shares of ``secret``, any ``threshold`` of which rebuild it and fewer reveal nothing."""
    if len(secret) != SECRET_BYTES:
        raise SecAggError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 2 <= threshold <= count <= 255:
        raise SecAggError(f"need 2 <= threshold <= count <= 255, got threshold {threshold} of {count}")
    low = Shamir.split(threshold, count, secret[:_HALF], ssss=False)
    high = Shamir.split(threshold, count, secret[_HALF:], ssss=False)
    return [Share(index=i, value=a + b) for (i, a), (j, b) in zip(low, high, strict=True) if i == j]


def combine_shares(shares: Sequence[Share], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares with distinct indices (the first ``threshold`` by index).

    Raises :class:`TooManyDropouts` when fewer than ``threshold`` distinct shares are given."""
    by_index = {s.index: s for s in shares}
    if len(by_index) != len(shares):
        raise SecAggError("two shares carry the same index; pass each holder's share once")
    if len(by_index) < threshold:
        raise TooManyDropouts(
            f"{len(by_index)} shares cannot rebuild a secret shared {threshold}-of-n; wait for more "
            "members' unmasking messages or fail the group"
        )
    # Interpolating more points than the degree needs is pointless work; any threshold of them suffices.
    chosen = [by_index[i] for i in sorted(by_index)[:threshold]]
    low = Shamir.combine([(s.index, s.value[:_HALF]) for s in chosen], ssss=False)
    high = Shamir.combine([(s.index, s.value[_HALF:]) for s in chosen], ssss=False)
    return bytes(low) + bytes(high)
