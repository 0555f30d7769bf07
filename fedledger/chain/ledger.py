"""The ContributionLedger's wire format: packed contributions, the update-hash commitment, audit anchors.

``recordRound`` takes the contributions as one ``bytes`` argument, 40 bytes each (participant, four scores x100
as uint16, reward as uint96, big-endian), and a keccak256 commitment to the participants' update hashes. This
module is the one place that packs and unpacks them, so the aggregator, the tests and indexers agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction

CONTRIBUTION_BYTES = 40
MAX_SCORE = 10_000
MAX_REWARD = 2**96 - 1


class LedgerFormatError(ValueError):
    """A contribution cannot be packed (bad address, score or reward) or packed bytes are malformed."""


@dataclass(frozen=True)
class LedgerContribution:
    """One scored contribution as the ledger records it (scores x100, 0..10000; reward in token wei)."""

    participant: str
    update_hash: bytes  # SHA-256 of the encrypted update (committed to by ``updates_hash``)
    quality: int
    timeliness: int
    honesty: int
    fitness: int
    reward: int


@dataclass(frozen=True)
class AuditAnchor:
    """The audit log's head as a recorded round anchored it: entry number ``count`` has hash ``head``."""

    round_id: int
    head: str  # hex, 64 chars, as AuditEntry.entry_hash
    count: int
    block_number: int


def pack_contributions(contributions: Sequence[LedgerContribution]) -> bytes:
    """The ``contributions`` argument of ``recordRound``."""
    out = bytearray()
    for i, c in enumerate(contributions):
        scores = (c.quality, c.timeliness, c.honesty, c.fitness)
        if any(not 0 <= s <= MAX_SCORE for s in scores):
            raise LedgerFormatError(f"contribution {i}: scores must be 0..{MAX_SCORE}, got {scores}")
        if not 0 <= c.reward <= MAX_REWARD:
            raise LedgerFormatError(f"contribution {i}: reward {c.reward} does not fit 96 bits")
        address = bytes.fromhex(to_checksum_address(c.participant)[2:])
        out += address + b"".join(s.to_bytes(2, "big") for s in scores) + c.reward.to_bytes(12, "big")
    return bytes(out)


def unpack_contributions(data: bytes) -> list[tuple[str, int, int, int, int, int]]:
    """(participant, quality, timeliness, honesty, fitness, reward) from a ``recordRound`` input."""
    if len(data) % CONTRIBUTION_BYTES:
        raise LedgerFormatError(f"{len(data)} bytes is not a multiple of {CONTRIBUTION_BYTES}")
    rows: list[tuple[str, int, int, int, int, int]] = []
    for offset in range(0, len(data), CONTRIBUTION_BYTES):
        chunk = data[offset : offset + CONTRIBUTION_BYTES]
        scores = [int.from_bytes(chunk[20 + 2 * k : 22 + 2 * k], "big") for k in range(4)]
        rows.append(
            (
                to_checksum_address(chunk[:20]),
                scores[0],
                scores[1],
                scores[2],
                scores[3],
                int.from_bytes(chunk[28:40], "big"),
            )
        )
    return rows


def updates_hash(contributions: Sequence[LedgerContribution]) -> bytes:
    """keccak256 of the update hashes in contribution order (``recordRound``'s ``updatesHash``)."""
    for i, c in enumerate(contributions):
        if len(c.update_hash) != 32:
            raise LedgerFormatError(f"contribution {i}: update hash must be 32 bytes")
    return bytes(Web3.keccak(b"".join(c.update_hash for c in contributions)))


def record_round_call(
    ledger: Contract,
    round_id: int,
    model_hash: bytes,
    rewards_root: bytes,
    contributions: Sequence[LedgerContribution],
    audit_head: bytes = b"\x00" * 32,
    audit_count: int = 0,
) -> ContractFunction:
    """The ``recordRound`` call for a round (the total is the sum of the rewards)."""
    return ledger.functions.recordRound(
        round_id,
        model_hash,
        rewards_root,
        sum(c.reward for c in contributions),
        audit_head,
        audit_count,
        updates_hash(contributions),
        pack_contributions(contributions),
    )


def audit_anchors(ledger: Contract, from_block: int = 0) -> list[AuditAnchor]:
    """Every audit anchor the ledger's ``RoundRecorded`` events carry, in round order (rounds recorded
    without an anchor, count 0, are left out)."""
    anchors = []
    for event in ledger.events.RoundRecorded.get_logs(from_block=from_block):
        args = event["args"]
        if int(args["auditCount"]) == 0:
            continue
        anchors.append(
            AuditAnchor(
                round_id=int(args["roundId"]),
                head=bytes(args["auditHead"]).hex(),
                count=int(args["auditCount"]),
                block_number=int(event["blockNumber"]),
            )
        )
    return sorted(anchors, key=lambda a: a.round_id)
