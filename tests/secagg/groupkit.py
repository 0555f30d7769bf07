"""Running one group through the protocol in memory, for the secagg tests (real crypto, no services)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from eth_account import Account

from fedledger.devkeys import dev_private_keys
from fedledger.secagg.messages import Domain
from fedledger.secagg.noise import MemberNoise
from fedledger.secagg.protocol import GroupContext, GroupMember, GroupSum, GroupTranscript

DOMAIN = Domain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
KEYS = dev_private_keys()[3:]
ADDRESSES = tuple(Account.from_key(k).address for k in KEYS)


@dataclass
class Run:
    """A group's members, the server's transcript and the updates the members masked."""

    context: GroupContext
    members: dict[str, GroupMember]
    transcript: GroupTranscript
    updates: dict[str, np.ndarray]


def context(
    size: int, threshold: int, dimension: int = 64, clip: float = 1.0, round_id: int = 7
) -> GroupContext:
    """A group of the first ``size`` dev organizations."""
    return GroupContext(
        domain=DOMAIN,
        round_id=round_id,
        seed=bytes(range(32)),
        members=ADDRESSES[:size],
        threshold=threshold,
        dimension=dimension,
        clip=clip,
    )


def updates_for(ctx: GroupContext, seed: int = 0, scale: float = 0.3) -> dict[str, np.ndarray]:
    """A float32 update per member, inside the clip range."""
    rng = np.random.default_rng(seed)
    return {
        m: rng.normal(0.0, scale, ctx.dimension).clip(-ctx.clip, ctx.clip).astype(np.float32)
        for m in ctx.members
    }


def run_group(
    ctx: GroupContext,
    *,
    silent_at_keys: Collection[str] = (),
    silent_at_shares: Collection[str] = (),
    silent_at_mask: Collection[str] = (),
    silent_at_unmask: Collection[str] = (),
    updates: dict[str, np.ndarray] | None = None,
    over_the_wire: bool = False,
    noise: MemberNoise | None = None,
) -> Run:
    """Every step with the server relaying all it holds; a member in ``silent_at_X`` stops before step X.
    With ``noise``, each member noises its update from :func:`noise_rng` (so a test can redraw it)."""
    members = {m: GroupMember(ctx, address=m, wallet_key=KEYS[ADDRESSES.index(m)]) for m in ctx.members}
    transcript = GroupTranscript(ctx)
    updates = updates if updates is not None else updates_for(ctx)
    gone: set[str] = set(silent_at_keys)
    for m in _live(members, gone):
        transcript.add_advert(members[m].advertise())
    gone |= set(silent_at_shares)
    for m in _live(members, gone):
        transcript.add_bundle(members[m].deal(list(transcript.adverts.values())))
    gone |= set(silent_at_mask)
    for m in _live(members, gone):
        transcript.add_masked(
            members[m].mask(
                updates[m],
                10 + ADDRESSES.index(m),
                list(transcript.bundles.values()),
                noise=noise,
                rng=noise_rng(m) if noise is not None else None,
            )
        )
    gone |= set(silent_at_unmask)
    for m in _live(members, gone):
        transcript.add_reveal(members[m].unmask([x.header() for x in transcript.masked.values()]))
    return Run(ctx, members, transcript, updates)


def noise_rng(member: str) -> np.random.Generator:
    """The generator a member of :func:`run_group` draws its DP noise from (seeded by its position)."""
    return np.random.default_rng([99, ADDRESSES.index(member)])


def quantized_sum(ctx: GroupContext, updates: dict[str, np.ndarray], who: Sequence[str]) -> np.ndarray:
    """The ring sum of the quantized updates of ``who`` (what the unmasked sum must equal exactly)."""
    total = np.zeros(ctx.dimension, dtype=np.uint32)
    for m in who:
        total += ctx.quantizer.encode(updates[m])
    return total


def survivors_of(result: GroupSum) -> list[str]:
    """The survivors, as a list."""
    return list(result.survivors)


_T = TypeVar("_T")


def _json_relay(
    message: _T, encode: Callable[[_T], dict[str, Any]], decode: Callable[[dict[str, Any]], _T]
) -> _T:
    return decode(json.loads(json.dumps(encode(message))))


def _same(message: _T, encode: Callable[[_T], dict[str, Any]], decode: Callable[[dict[str, Any]], _T]) -> _T:
    return message


def _live(members: dict[str, GroupMember], gone: set[str]) -> list[str]:
    return [m for m in members if m not in gone]
