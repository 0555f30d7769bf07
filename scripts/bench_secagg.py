"""Client and server time and bytes per round: secure aggregation in groups against the clear mode.

Clear mode, per organization: encode the float32 delta (safetensors), seal it for the server's X25519 key
(AES-256-GCM), sign the EIP-712 ``Update``; the server recovers the signer, opens the envelope and decodes
the delta. Secure mode (fedledger.secagg, groups of ``--group-size`` with threshold ``--threshold``), per
organization: its four steps (keys, shares, masked input, unmasking) with every check of the others'
messages, each message through its JSON wire form; the server checks every message on arrival and unmasks
each group. ``--dropouts`` members per group fall silent after dealing their shares (the server then
rebuilds their mask keys and removes their pairwise masks).

With ``--dp Z`` differential privacy is on in both modes (noise multiplier Z, clip ``--dp-clip``): the clear
mode's server clips every decoded update and adds one noise draw to the round's sum; in the secure mode each
member clips and adds its share of the noise before masking (``fedledger.secagg.noise.MemberNoise``, drawn
from fresh OS entropy as the SDK does) into a group whose quantizer range holds it, and the server adds none.

Client time is one organization's own work (the median organization of a round); server time is the
whole round's. Rounds alternate between the modes after a warm-up; figures are the median (min-max) over
``--repeats`` rounds. Network and database time are not included (the same in both modes per byte).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/bench_secagg.py --n 100 --d 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from eth_account import Account

from fedledger.crypto.eip712 import payload_hash, recover_update_signer, sign_update
from fedledger.crypto.envelope import open_envelope, seal
from fedledger.crypto.keys import generate_server_key
from fedledger.payload import decode_update, encode_update
from fedledger.secagg import wire
from fedledger.secagg.groups import assign_groups
from fedledger.secagg.messages import Domain
from fedledger.secagg.noise import MemberNoise
from fedledger.secagg.protocol import GroupContext, GroupMember, GroupTranscript

DOMAIN = Domain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
T = TypeVar("T")


@dataclass
class RoundCost:
    """One round's measurements: per-organization seconds and bytes, and the server's seconds."""

    client_s: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    server_s: float = 0.0


def wallets(n: int) -> list[tuple[str, str]]:
    """``n`` deterministic (address, key) pairs (not the dev chain's: any wallet signs the same way)."""
    out = []
    for i in range(n):
        key = "0x" + hashlib.sha256(f"bench-secagg-{i}".encode()).hexdigest()
        out.append((Account.from_key(key).address, key))
    return out


def delta_of(i: int, d: int) -> np.ndarray:
    """Organization ``i``'s update, generated on demand so a round never holds n x d floats at once."""
    return np.random.default_rng(i).normal(0.0, 0.01, d).astype(np.float32)


def clear_round(orgs: list[tuple[str, str]], d: int, dp: Dp | None = None) -> RoundCost:
    """Seal, sign, recover, open and decode every update (under DP the server clips each and noises the sum)."""
    server_key = generate_server_key()
    cost = RoundCost()
    shapes = {"w": (d,)}
    rng = np.random.default_rng()
    for i, (address, key) in enumerate(orgs):
        delta = delta_of(i, d)
        start = time.perf_counter()
        envelope = seal(
            encode_update({"w": delta}),
            server_key.public_pem,
            round_id=1,
            model_version=1,
            participant=address,
            num_samples=100,
        )
        signature = sign_update(
            key,
            chain_id=DOMAIN.chain_id,
            verifying_contract=DOMAIN.verifying_contract,
            round_id=1,
            model_version=1,
            payload_hash=payload_hash(envelope),
            num_samples=100,
        )
        cost.client_s.append(time.perf_counter() - start)
        cost.sent.append(len(envelope) + len(signature))
        cost.received.append(len(server_key.public_pem))
        start = time.perf_counter()
        signer = recover_update_signer(
            signature,
            chain_id=DOMAIN.chain_id,
            verifying_contract=DOMAIN.verifying_contract,
            round_id=1,
            model_version=1,
            payload_hash=payload_hash(envelope),
            num_samples=100,
        )
        _, plaintext = open_envelope(envelope, {server_key.key_id: server_key.private_pem})
        decoded = decode_update(plaintext, shapes)
        if dp is not None:
            clip_in_place(decoded["w"], dp.clip)
        cost.server_s += time.perf_counter() - start
        assert signer == address and decoded["w"].shape == (d,)
    if dp is not None:
        # The central noise on the sum: one draw of d coordinates per round.
        start = time.perf_counter()
        noise = rng.standard_normal(d, dtype=np.float32)
        noise *= np.float32(dp.multiplier * dp.clip)
        cost.server_s += time.perf_counter() - start
    return cost


@dataclass(frozen=True)
class Dp:
    """The governed DP settings of a benchmarked round."""

    multiplier: float
    clip: float


def clip_in_place(x: np.ndarray, clip: float) -> None:
    """Scale ``x`` down to L2 norm ``clip`` (the clear mode's server-side DP clip)."""
    norm = float(np.sqrt(np.einsum("i,i->", x, x, dtype=np.float64)))
    if norm > clip:
        x *= np.float32(clip / norm)


def secure_round(
    orgs: list[tuple[str, str]],
    d: int,
    group_size: int,
    threshold: int,
    dropouts: int,
    dp: Dp | None = None,
) -> RoundCost:
    """Every group through the four steps over JSON; the server checks and unmasks each group."""
    keys = dict(orgs)
    index = {a: i for i, (a, _) in enumerate(orgs)}
    cost = RoundCost()
    seed = hashlib.sha256(b"bench-secagg-seed").digest()
    for members in assign_groups(seed, [a for a, _ in orgs], group_size):
        k = len(members)
        t = max(threshold, k // 2 + 1)
        noise = None if dp is None else MemberNoise.for_group(dp.clip, dp.multiplier, k, t)
        # Under DP the group's range holds a clipped coordinate plus the noise's tail.
        span = 1.0 if noise is None else noise.required_range(d)
        ctx = GroupContext(DOMAIN, 1, seed, members, t, d, clip=span)
        group_cost = secure_group(ctx, keys, index, dropouts, noise)
        cost.client_s += group_cost.client_s
        cost.sent += group_cost.sent
        cost.received += group_cost.received
        cost.server_s += group_cost.server_s
    return cost


def secure_group(
    ctx: GroupContext,
    keys: dict[str, str],
    index: dict[str, int],
    dropouts: int,
    noise: MemberNoise | None = None,
) -> RoundCost:
    """One group's four steps; per-member client time and bytes, and the server's time for the group."""
    members = ctx.members
    d = ctx.dimension
    cost = RoundCost()
    clock = {m: 0.0 for m in members}
    sent = {m: 0 for m in members}
    received = {m: 0 for m in members}
    server = 0.0
    transcript = GroupTranscript(ctx)

    def timed(who: str, work: Callable[[], T]) -> T:
        start = time.perf_counter()
        out = work()
        clock[who] += time.perf_counter() - start
        return out

    def to_server(who: str, doc: dict[str, Any], add: Callable[[], None], extra: int = 0) -> None:
        nonlocal server
        sent[who] += wire.message_bytes(doc) + extra
        start = time.perf_counter()
        add()
        server += time.perf_counter() - start

    group = {m: GroupMember(ctx, address=m, wallet_key=keys[m]) for m in members}
    for m, member in group.items():
        advert = timed(m, member.advertise)
        doc = wire.advert_json(advert)
        to_server(m, doc, lambda doc=doc: transcript.add_advert(wire.advert_from(doc)))
    adverts = [wire.advert_json(a) for a in transcript.adverts.values()]
    for m, member in group.items():
        received[m] += sum(wire.message_bytes(a) for a in adverts)
        bundle = timed(m, lambda member=member: member.deal([wire.advert_from(a) for a in adverts]))
        doc = wire.bundle_json(bundle)
        to_server(m, doc, lambda doc=doc: transcript.add_bundle(wire.bundle_from(doc)))
    bundles = [wire.bundle_json(b) for b in transcript.bundles.values()]
    silent = set(list(members)[:dropouts])
    for m, member in group.items():
        if m in silent:
            continue
        received[m] += sum(wire.message_bytes(b) for b in bundles)
        update = delta_of(index[m], d)
        masked = timed(
            m,
            lambda member=member, update=update: member.mask(
                update, 100, [wire.bundle_from(b) for b in bundles], noise=noise
            ),
        )
        assert masked.vector is not None
        raw = timed(m, lambda masked=masked: wire.vector_bytes(masked.vector))
        doc = wire.masked_json(masked)
        to_server(
            m,
            doc,
            lambda doc=doc, raw=raw: transcript.add_masked(wire.masked_from(doc, wire.vector_from(raw, d))),
            extra=len(raw),
        )
    headers = [wire.masked_json(x.header()) for x in transcript.masked.values()]
    for m, member in group.items():
        if m in silent:
            continue
        received[m] += sum(wire.message_bytes(h) for h in headers)
        reveal = timed(m, lambda member=member: member.unmask([wire.masked_from(h) for h in headers]))
        doc = wire.reveal_json(reveal)
        to_server(m, doc, lambda doc=doc: transcript.add_reveal(wire.reveal_from(doc)))
    start = time.perf_counter()
    result = transcript.unmask()
    server += time.perf_counter() - start
    assert len(result.survivors) == len(members) - len(silent)
    for m in members:
        if m not in silent:
            cost.client_s.append(clock[m])
            cost.sent.append(sent[m])
            cost.received.append(received[m])
    cost.server_s += server
    return cost


def summary(values: list[float]) -> str:
    """median (min-max)."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    """Warm up, alternate the modes, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--group-size", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=2)
    parser.add_argument(
        "--dropouts", type=int, default=0, help="members per group silent after dealing shares"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dp", type=float, default=None, help="DP noise multiplier (default: DP off)")
    parser.add_argument("--dp-clip", type=float, default=1.0, help="DP L2 clip norm")
    args = parser.parse_args()
    dp = None if args.dp is None else Dp(args.dp, args.dp_clip)
    orgs = wallets(args.n)
    start_load = os.getloadavg()
    clear_round(orgs[:3], 1000, dp)
    secure_round(orgs[:3], 1000, 3, 2, 0, dp)
    runs: dict[str, list[RoundCost]] = {"clear": [], "secure": []}
    for _ in range(args.repeats):
        runs["clear"].append(clear_round(orgs, args.d, dp))
        runs["secure"].append(secure_round(orgs, args.d, args.group_size, args.threshold, args.dropouts, dp))
    load = os.getloadavg()
    privacy = "DP off" if dp is None else f"DP on (z={dp.multiplier:g}, clip {dp.clip:g})"
    print(
        f"n={args.n} d={args.d} groups of {args.group_size} (t={args.threshold}), {args.dropouts} dropout(s) per "
        f"group, {privacy}, {args.repeats} rounds per mode, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (at start {start_load[0]:.2f})"
    )
    print("| mode | client s (median org) | server s (round) | client sent bytes | client received bytes |")
    print("| --- | --- | --- | --- | --- |")
    for mode, costs in runs.items():
        client = [statistics.median(c.client_s) for c in costs]
        server = [c.server_s for c in costs]
        print(
            f"| {mode} | {summary(client)} | {summary(server)} | {int(statistics.median(costs[0].sent)):,} | "
            f"{int(statistics.median(costs[0].received)):,} |"
        )
    c_clear = statistics.median([statistics.median(c.client_s) for c in runs["clear"]])
    c_secure = statistics.median([statistics.median(c.client_s) for c in runs["secure"]])
    s_clear = statistics.median([c.server_s for c in runs["clear"]])
    s_secure = statistics.median([c.server_s for c in runs["secure"]])
    print(f"client overhead: {c_secure / c_clear:.2f}x the clear mode's sealing (goal < 2x)")
    print(f"server overhead: {s_secure / s_clear:.2f}x the clear mode's decryption (goal < 2x)")


if __name__ == "__main__":
    main()
