"""The temporary blobs of a sharded close: tagged with their round, and swept once the round is no longer
being closed and they are old (aggregator.worker.temporaries), with the real filesystem blob store."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from aggregator.worker.close import renew
from aggregator.worker.temporaries import (
    get_temporary,
    get_temporary_range,
    put_temporary,
    round_of,
    sweep_temporaries,
)
from db.base import utcnow
from db.models import Round, RoundStatus
from fedledger.domain.blobstore import FilesystemBlobStore
from tests.databases import seeded_sessions

GRACE = 300.0


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with seeded_sessions(f"sqlite:///{tmp_path / 't.db'}", 2) as factory:
        yield factory


def add_round(sessions: sessionmaker[Session], status: RoundStatus, lease_seconds: float | None) -> int:
    now = utcnow()
    with sessions.begin() as session:
        round_ = Round(
            status=status,
            model_version_id=1,
            opened_at=now,
            deadline=now,
            quorum=1,
            strategy="fedavg",
            lease_owner="host:1" if lease_seconds is not None else None,
            lease_until=now + timedelta(seconds=lease_seconds) if lease_seconds is not None else None,
        )
        session.add(round_)
        session.flush()
        return round_.id


def aged(blobs: FilesystemBlobStore, digest: str, seconds: float = 2 * GRACE) -> str:
    then = time.time() - seconds
    os.utime(blobs.path(digest), (then, then))
    return digest


def test_a_temporary_blob_carries_its_round_and_reads_as_its_data(tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    row = np.arange(6, dtype=np.float32)
    digest = put_temporary(blobs, 42, row)
    assert round_of(blobs.head(digest, 16)) == 42
    assert np.array_equal(np.frombuffer(get_temporary(blobs, digest), "<f4"), row)
    assert np.array_equal(np.frombuffer(get_temporary_range(blobs, digest, 8, 12), "<f4"), row[2:5])
    assert round_of(b"FLE2" + bytes(12)) is None and round_of(b"FLSH") is None


def test_the_sweep_deletes_old_temporaries_of_rounds_no_longer_closing(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    crashed = add_round(sessions, RoundStatus.aggregated, None)  # closed again by another worker since
    expired = add_round(sessions, RoundStatus.closing, -10)  # its coordinator died; the lease ran out
    running = add_round(sessions, RoundStatus.closing, 600)  # a close under way
    gone = [aged(blobs, put_temporary(blobs, r, np.full(4, r, np.float32))) for r in (crashed, expired)]
    kept_running = aged(blobs, put_temporary(blobs, running, np.ones(4, np.float32)))
    kept_young = put_temporary(blobs, crashed, np.zeros(4, np.float32))  # younger than the grace period
    kept_other = aged(blobs, blobs.put(b"FLE2 not a temporary blob, e.g. an update"))

    report = sweep_temporaries(sessions, blobs, GRACE)
    assert sorted(report.deleted) == sorted(gone) and report.kept_closing == 1
    assert not any(blobs.exists(d) for d in gone)
    assert all(blobs.exists(d) for d in (kept_running, kept_young, kept_other))
    assert sweep_temporaries(sessions, blobs, GRACE).deleted == []  # idempotent


def test_a_sharded_close_renews_only_the_lease_it_holds(sessions: sessionmaker[Session]) -> None:
    """Each pass's callback renews the lease: the holder can, another worker or a closed round cannot."""
    closing = add_round(sessions, RoundStatus.closing, 5)
    closed = add_round(sessions, RoundStatus.aggregated, None)
    assert renew(sessions, closing, "host:1", 600)
    with sessions() as session:
        round_ = session.get(Round, closing)
        assert round_ is not None and round_.lease_until is not None
        assert round_.lease_until > utcnow() + timedelta(seconds=500)
    assert not renew(sessions, closing, "host:2", 600)
    assert not renew(sessions, closed, "host:1", 600)
