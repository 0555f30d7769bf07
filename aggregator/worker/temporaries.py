"""The temporary blobs of a sharded close, and the sweep of those a crashed coordinator left behind.

A sharded close keeps its extra rows, base model, summed statistics, derived rows and the shards' parts of the
new model as blobs while its passes run (aggregator.worker.shards), and deletes them when it ends, however it
ends. A coordinator (or a chord callback) killed mid-way cannot: its blobs would stay forever, since nothing
names them (they are not updates, which the orphan sweep of fedledger.domain.blobsweep handles). So each one
starts with a 16-byte head, ``FLSH || u64 round id || u32 0``, and :func:`sweep_temporaries` (on the beat)
deletes those of a round that is not being closed any more (not CLOSING, or CLOSING under an expired lease)
once they are older than the grace period.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import Round, RoundStatus
from fedledger.domain.blobstore import BlobNotFound, BlobStore

MAGIC = b"FLSH"
HEAD = struct.Struct(">4sQI")  # magic, round id, reserved


def put_temporary(blobs: BlobStore, round_id: int, data: bytes | np.ndarray) -> str:
    """Store ``data`` (raw bytes, or an array as little-endian float32) as a temporary blob of the round."""
    raw = data if isinstance(data, bytes) else np.ascontiguousarray(data, dtype="<f4").tobytes()
    return blobs.put(HEAD.pack(MAGIC, round_id, 0) + raw)


def get_temporary(blobs: BlobStore, digest: str) -> bytes:
    """A temporary blob's data, without its head."""
    return blobs.get(digest)[HEAD.size :]


def get_temporary_range(blobs: BlobStore, digest: str, start: int, size: int) -> bytes:
    """``size`` bytes of a temporary blob's data from ``start``."""
    return blobs.get_range(digest, HEAD.size + start, size)


def round_of(head: bytes) -> int | None:
    """The round a temporary blob belongs to, from its first bytes; None for any other blob."""
    if len(head) < HEAD.size:
        return None
    magic, round_id, _ = HEAD.unpack(head[: HEAD.size])
    return int(round_id) if magic == MAGIC else None


@dataclass
class TemporarySweep:
    """What a sweep found and did."""

    deleted: list[str] = field(default_factory=list)
    kept_closing: int = 0  # temporaries of rounds whose close is under way


def sweep_temporaries(
    sessions: sessionmaker[Session], blobs: BlobStore, grace_seconds: float, now: float | None = None
) -> TemporarySweep:
    """Delete the temporary blobs older than ``grace_seconds`` of every round not being closed (see the
    module docstring). Idempotent; a blob deleted meanwhile is skipped."""
    cutoff = (time.time() if now is None else now) - grace_seconds
    by_round: dict[int, list[str]] = {}
    for blob in blobs.stored():
        if blob.mtime > cutoff or blob.size < HEAD.size:
            continue
        try:
            round_id = round_of(blobs.head(blob.digest, HEAD.size))
        except BlobNotFound:
            continue
        if round_id is not None:
            by_round.setdefault(round_id, []).append(blob.digest)
    report = TemporarySweep()
    if not by_round:
        return report
    at = utcnow()
    with sessions() as session:
        closing = set(
            session.scalars(
                select(Round.id).where(
                    Round.id.in_(by_round), Round.status == RoundStatus.closing, Round.lease_until > at
                )
            )
        )
    for round_id, digests in sorted(by_round.items()):
        if round_id in closing:
            report.kept_closing += len(digests)
            continue
        for digest in digests:
            blobs.delete(digest)
            report.deleted.append(digest)
    return report
