"""Assignment of a round's members to groups of at least ``s``: a pure function of (seed, members, s).

The seed must be one no member controls alone: the round's group seed is derived from the hash of a block
mined after every member's key advertisement is on record (:func:`group_seed`), so a member who wants to
choose its group-mates would have to predict or grind that block. Given the seed, the assignment is a
Fisher-Yates shuffle of the sorted member list driven by SHAKE-256 (indices drawn by rejection sampling,
so every permutation is equally likely), cut into ``n // s`` groups; the ``n mod s`` members left over join
the groups in turn, so every group has between ``s`` and ``2s - 1`` members. Anybody holding the
seed and the member list recomputes the same groups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fedledger.crypto.addresses import checksummed, is_valid_address
from fedledger.secagg.errors import GroupAssignmentError

MIN_GROUP_SIZE = 3
SEED_BYTES = 32
_SEED_LABEL = b"fedledger/secagg/group-seed/v1"
_SHUFFLE_LABEL = b"fedledger/secagg/shuffle/v1"


def group_seed(block_hash: bytes, round_id: int) -> bytes:
    """The round's 32-byte assignment seed from a block hash, bound to the round so no two rounds share it."""
    if len(block_hash) != SEED_BYTES:
        raise GroupAssignmentError(f"block hash must be {SEED_BYTES} bytes, got {len(block_hash)}")
    if round_id < 0:
        raise GroupAssignmentError(f"round id must be >= 0, got {round_id}")
    return hashlib.sha256(_SEED_LABEL + round_id.to_bytes(32, "big") + block_hash).digest()


def assign_groups(seed: bytes, members: Sequence[str], group_size: int) -> tuple[tuple[str, ...], ...]:
    """Groups of checksummed addresses, each sorted by lowercase address; every member in exactly one group.

    Raises :class:`GroupAssignmentError` for a seed that is not 32 bytes, a group size below 3, fewer
    members than one group, a malformed address or a member listed twice."""
    if len(seed) != SEED_BYTES:
        raise GroupAssignmentError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if group_size < MIN_GROUP_SIZE:
        raise GroupAssignmentError(
            f"group size must be at least {MIN_GROUP_SIZE} (a pair's sum reveals each member's update "
            f"to the other), got {group_size}"
        )
    for member in members:
        if not is_valid_address(member):
            raise GroupAssignmentError(f"member {member!r} is not a 0x address")
    ordered = sorted((checksummed(m) for m in members), key=str.lower)
    if len(set(ordered)) != len(ordered):
        raise GroupAssignmentError("a member is listed twice; pass each address once")
    if len(ordered) < group_size:
        raise GroupAssignmentError(
            f"{len(ordered)} members cannot fill one group of {group_size}; wait for more members or lower "
            "the governed group size"
        )
    shuffled = _shuffle(seed, ordered)
    count = len(shuffled) // group_size
    groups = [shuffled[g * group_size : (g + 1) * group_size] for g in range(count)]
    for extra, member in enumerate(shuffled[count * group_size :]):
        groups[extra % count].append(member)
    return tuple(tuple(sorted(g, key=str.lower)) for g in groups)


def _shuffle(seed: bytes, items: list[str]) -> list[str]:
    out = list(items)
    stream = _Stream(seed)
    for i in range(len(out) - 1, 0, -1):
        j = stream.below(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


class _Stream:
    """Uniform integers from SHAKE-256(label || seed), read 8 bytes at a time."""

    def __init__(self, seed: bytes) -> None:
        self._xof = hashlib.shake_256(_SHUFFLE_LABEL + seed)
        self._buffer = b""
        self._used = 0

    def below(self, bound: int) -> int:
        # Rejection sampling: drop draws from the incomplete top block so every value is equally likely.
        limit = (2**64 // bound) * bound
        while True:
            draw = int.from_bytes(self._take(8), "big")
            if draw < limit:
                return draw % bound

    def _take(self, n: int) -> bytes:
        if self._used + n > len(self._buffer):
            # shake_256 has no streaming read: extend the digest and keep the offset.
            self._buffer = self._xof.digest(max(2 * len(self._buffer), 1024))
        chunk = self._buffer[self._used : self._used + n]
        self._used += n
        return chunk


def assign_tiers(
    seed: bytes, eligible: Sequence[str], below_minimum: Sequence[str], group_size: int
) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """Groups of members at or above ``min_reputation`` and, apart, groups of those below it, plus the
    members left out (a tier with fewer members than one group).

    Kept apart so a member whose updates the round does not aggregate never shares a sum with those it
    does: its group is still scored (its reputation can climb back) but never hides it in an honest one."""
    if {m.lower() for m in eligible} & {m.lower() for m in below_minimum}:
        raise GroupAssignmentError("a member is listed in both reputation tiers; pass each member once")
    groups: list[tuple[str, ...]] = []
    left_out: list[str] = []
    for tier, members in enumerate((eligible, below_minimum)):
        if len(members) < group_size:
            left_out += [checksummed(m) for m in members]
            continue
        tier_seed = hashlib.sha256(_SHUFFLE_LABEL + bytes([tier]) + seed).digest()
        groups += assign_groups(tier_seed, members, group_size)
    return tuple(groups), tuple(left_out)
