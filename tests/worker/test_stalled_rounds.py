"""The close counts the rounds in a row that kept neither the rule's aggregate nor the server's step (issue
20: after such a round a refused aggregate gives way to the norm-bounded mean), from the aggregation
records, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from aggregator.worker.close import STALL_LOOKBACK, stalled_rounds
from db.models import Aggregation
from tests.databases import aggregated_round, scratch_url, seeded_sessions


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with scratch_url(request.param, tmp_path, "s") as url, seeded_sessions(url, 4, participants=3) as factory:
        yield factory


def aggregated(sessions: sessionmaker[Session], rolled_back: bool, **params: Any) -> None:
    """One more aggregated round and its aggregation record."""
    with sessions.begin() as session:
        round_ = aggregated_round(session)
        session.add(
            Aggregation(
                round_id=round_.id, strategy="fltrust_guarded", params=params, rolled_back=rolled_back
            )
        )


def count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return stalled_rounds(session)


def test_stalled_rounds_are_the_latest_refused_or_fallback_rounds(sessions: sessionmaker[Session]) -> None:
    assert count(sessions) == 0  # no round aggregated yet
    aggregated(sessions, False, kept_by="aggregate")
    assert count(sessions) == 0
    aggregated(sessions, True, kept_by="none")
    aggregated(sessions, False, kept_by="fallback")
    aggregated(sessions, True)  # a record from before kept_by: its rolled_back alone
    assert count(sessions) == 3
    aggregated(sessions, False, kept_by="server")  # the server's step ends the stall
    assert count(sessions) == 0
    aggregated(sessions, False)  # an older record kept: not stalled
    aggregated(sessions, True, kept_by="none")
    assert count(sessions) == 1


def test_a_long_stall_is_counted_up_to_the_lookback(sessions: sessionmaker[Session]) -> None:
    for _ in range(STALL_LOOKBACK + 2):
        aggregated(sessions, True, kept_by="none")
    assert count(sessions) == STALL_LOOKBACK
