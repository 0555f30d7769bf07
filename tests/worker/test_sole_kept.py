"""The close reads who alone made the last public change (issue 20: an organization kept alone whose next
update repeats that change is not a free rider), from the contributions of the round that produced the
active model, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from aggregator.worker.close import sole_kept
from db.models import Contribution, Update
from tests.databases import aggregated_round, scratch_url, seeded_sessions


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with scratch_url(request.param, tmp_path, "k") as url, seeded_sessions(url, 4, participants=3) as factory:
        yield factory


def closed_round(sessions: sessionmaker[Session], kept: dict[int, bool]) -> int:
    """An aggregated round with one contribution per participant in ``kept`` (kept or not)."""
    with sessions.begin() as session:
        round_ = aggregated_round(session)
        for participant, is_kept in kept.items():
            update = Update(
                round_id=round_.id,
                participant_id=participant,
                ciphertext_hash=f"{round_.id:032x}{participant:032x}",
                key_id=None,
                model_version_id=1,
                num_samples=10,
                metrics={},
                signature="0x",
                size_bytes=4,
                receipt_id=f"r{round_.id}-{participant}",
            )
            session.add(update)
            session.flush()
            session.add(
                Contribution(
                    round_id=round_.id,
                    participant_id=participant,
                    update_id=update.id,
                    quality=0.0,
                    timeliness=100.0,
                    honesty=100.0,
                    fitness=60.0,
                    kept=is_kept,
                    reputation_after=50.0,
                )
            )
        return round_.id


def test_only_a_round_that_kept_exactly_one_update_has_an_author(sessions: sessionmaker[Session]) -> None:
    alone = closed_round(sessions, {1: False, 2: True, 3: False})
    several = closed_round(sessions, {1: True, 2: True, 3: False})
    nobody = closed_round(sessions, {1: False, 2: False})
    empty = closed_round(sessions, {})
    with sessions() as session:
        assert sole_kept(session, alone) == 2
        assert sole_kept(session, several) is None
        assert sole_kept(session, nobody) is None
        assert sole_kept(session, empty) is None
        assert sole_kept(session, None) is None  # the first model: no producing round
