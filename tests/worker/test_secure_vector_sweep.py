"""The masked vectors nothing will unmask any more (a failed secure round's, a failed group's) are swept
once their round is closed past the grace period (fedledger.domain.secagg.sweep_vectors, on the beat), with
the real filesystem blob store and database; the rest stay."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import (
    Round,
    RoundStatus,
    SecAggGroup,
    SecAggMessage,
    SecAggStep,
    Update,
)
from fedledger.domain.blobstore import FilesystemBlobStore
from fedledger.domain.secagg import sweep_vectors
from tests.databases import scratch_url, seeded_sessions

GRACE = 300.0


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # PostgreSQL too: the sweep locks the messages it handles (FOR UPDATE OF, over a join and a subquery).
    with scratch_url(request.param, tmp_path, "v") as scratch:
        yield scratch


@pytest.fixture
def sessions(url: str) -> Iterator[sessionmaker[Session]]:
    with seeded_sessions(url, 8, participants=4) as factory:
        yield factory


def secure_round(
    sessions: sessionmaker[Session],
    blobs: FilesystemBlobStore,
    status: RoundStatus,
    closed_at: datetime | None,
    groups: list[str | None],
    seed: int,
) -> dict[int, str]:
    """A secure round with one masked input (a blob, its message, its update row) per group, each group
    failed with the given reason or not; the vectors' digests by group."""
    rng = np.random.default_rng(seed)
    with sessions.begin() as session:
        round_ = Round(
            status=status,
            model_version_id=1,
            opened_at=utcnow() - timedelta(hours=2),
            deadline=utcnow(),
            quorum=1,
            strategy="fedavg",
            closed_at=closed_at,
        )
        session.add(round_)
        session.flush()
        digests = {}
        for index, reason in enumerate(groups):
            session.add(
                SecAggGroup(
                    round_id=round_.id,
                    group_index=index,
                    members=[],
                    threshold=2,
                    group_id="0x",
                    failure_reason=reason,
                )
            )
            vector = rng.integers(0, 2**32, 8, dtype=np.uint32).tobytes()
            digest = blobs.put(vector)
            assert digest == hashlib.sha256(vector).hexdigest()
            participant = index + 1
            session.add(
                SecAggMessage(
                    round_id=round_.id,
                    group_index=index,
                    sender="0x" + f"{participant:040x}",
                    step=SecAggStep.masked,
                    body={"member": "0x" + f"{participant:040x}"},
                    body_hash="h",
                    blob_hash=digest,
                    size_bytes=len(vector),
                )
            )
            session.add(
                Update(
                    round_id=round_.id,
                    participant_id=participant,
                    ciphertext_hash=digest,
                    key_id=None,
                    model_version_id=1,
                    num_samples=10,
                    metrics={},
                    signature="0x",
                    size_bytes=len(vector),
                    receipt_id=f"r{round_.id}-{index}",
                )
            )
            digests[index] = digest
    return digests


def test_a_failed_rounds_and_failed_groups_vectors_are_swept_once_and_the_rest_stay(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    now = utcnow()
    long_ago, just_now = now - timedelta(seconds=2 * GRACE), now - timedelta(seconds=GRACE / 10)
    failed = secure_round(sessions, blobs, RoundStatus.failed, long_ago, [None, "TooManyDropouts: 1 of 3"], 1)
    posted = secure_round(sessions, blobs, RoundStatus.posted, long_ago, [None, "ForgedShare: a box"], 2)
    recent = secure_round(sessions, blobs, RoundStatus.failed, just_now, [None], 3)
    running = secure_round(sessions, blobs, RoundStatus.open, None, ["TooManyDropouts"], 4)

    swept = sweep_vectors(sessions, blobs, GRACE, now)

    # Every vector of the failed round, the posted round's failed group's; not the posted round's unmasked
    # group (its sum can be checked again from it), nor a round closed within the grace, nor an open one.
    assert sorted(swept) == sorted([failed[0], failed[1], posted[1]])
    for digest in swept:
        assert not blobs.path(digest).exists()
    for digest in (posted[0], recent[0], running[0]):
        assert blobs.get(digest)
    # The updates keep the hash as their record of what was sent; the messages no longer name a blob.
    with sessions() as session:
        hashes = set(session.scalars(select(Update.ciphertext_hash)))
        left = set(
            session.scalars(select(SecAggMessage.blob_hash).where(SecAggMessage.blob_hash.is_not(None)))
        )
    assert set(swept) <= hashes
    assert left == {posted[0], recent[0], running[0]}
    # A second run finds nothing; the recent round's turn comes once its grace is over.
    assert sweep_vectors(sessions, blobs, GRACE, now) == []
    assert sweep_vectors(sessions, blobs, GRACE, now + timedelta(seconds=GRACE)) == [recent[0]]


def test_a_vector_whose_bytes_another_round_names_stays_in_the_store(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    now = utcnow()
    failed = secure_round(sessions, blobs, RoundStatus.failed, now - timedelta(hours=1), [None], 5)
    # The same bytes are the update of a later round (a replay, or a collision): its row still needs them.
    kept = secure_round(sessions, blobs, RoundStatus.open, None, [None], 5)
    assert kept[0] == failed[0]
    assert sweep_vectors(sessions, blobs, GRACE, now) == []
    assert blobs.get(failed[0])
    with sessions() as session:
        names = list(session.scalars(select(SecAggMessage.blob_hash).order_by(SecAggMessage.id)))
    assert names == [None, failed[0]]
