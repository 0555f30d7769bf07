"""The round-state rules that send one close and one post per round (fedledger.domain.pipeline)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import (
    Participant,
    ParticipantStatus,
    Round,
    RoundStatus,
    ServerKey,
    Update,
    UpdateStatus,
)
from fedledger.domain import pipeline
from tests.databases import seeded_sessions

LEASE = 60.0


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with seeded_sessions(f"sqlite:///{tmp_path / 'p.db'}", 2, participants=5) as factory:
        with factory.begin() as session:
            session.add(ServerKey(kid="k", algorithm="X25519", public_key_pem="-"))
        yield factory


def open_round(
    sessions: sessionmaker[Session],
    quorum: int,
    seconds: int = 3600,
    active_since: datetime | None = None,
    cohort: list[str] | None = None,
) -> int:
    now = utcnow()
    with sessions.begin() as session:
        round_ = Round(
            status=RoundStatus.open,
            model_version_id=1,
            opened_at=now,
            deadline=now + timedelta(seconds=seconds),
            quorum=quorum,
            active_since=active_since,
            cohort=cohort,
            cohort_size=len(cohort) if cohort is not None else None,
            strategy="fedavg",
        )
        session.add(round_)
        session.flush()
        return round_.id


def submit(sessions: sessionmaker[Session], round_id: int, participant: int) -> bool:
    """Insert an update and ask for the close in the same transaction, as the API does."""
    with sessions.begin() as session:
        session.add(
            Update(
                round_id=round_id,
                participant_id=participant,
                ciphertext_hash=f"{participant:064x}",
                key_id="k",
                model_version_id=1,
                num_samples=1,
                signature="0x",
                size_bytes=1,
                receipt_id=f"{round_id}-{participant}",
                status=UpdateStatus.received,
            )
        )
        session.flush()
        return pipeline.request_early_close(session, round_id, utcnow())


def test_a_quorum_reached_first_does_not_close_only_the_last_active_organization_does(sessions) -> None:  # type: ignore[no-untyped-def]
    """Issue 20, the race to quorum: three wallets at the opening reach the quorum (3) but the round waits
    for the other active organizations; the submission that completes them requests the close, once."""
    round_id = open_round(sessions, quorum=3)
    assert [submit(sessions, round_id, p) for p in range(1, 6)] == [False, False, False, False, True]
    # The beat does not send it again while the request is outstanding, but does once it is a lease old.
    with sessions.begin() as session:
        assert pipeline.claim_closes(session, utcnow(), LEASE) == []
        assert pipeline.claim_closes(session, utcnow() + timedelta(seconds=LEASE + 1), LEASE) == [round_id]


def test_a_later_round_still_waits_for_every_active_organization(sessions) -> None:  # type: ignore[no-untyped-def]
    """Every organization's update to an earlier round does not count for this one: the race to quorum stays
    closed from the second round on (the check once read an update in any round as one in this round)."""
    first = open_round(sessions, quorum=3)
    assert [submit(sessions, first, p) for p in range(1, 6)] == [False, False, False, False, True]
    second = open_round(sessions, quorum=3)
    assert [submit(sessions, second, p) for p in range(1, 6)] == [False, False, False, False, True]


def test_the_beat_requests_a_due_close_once_and_never_an_early_one(sessions) -> None:  # type: ignore[no-untyped-def]
    early = open_round(sessions, quorum=5)
    submit(sessions, early, 1)
    now = utcnow()
    with sessions.begin() as session:
        assert pipeline.claim_closes(session, now, LEASE) == []  # before deadline and quorum
        assert pipeline.claim_closes(session, now + timedelta(hours=2), LEASE) == [early]  # deadline passed
        assert pipeline.claim_closes(session, now + timedelta(hours=2), LEASE) == []  # already requested


def test_early_close_waits_for_active_organizations_only_and_for_the_quorum(sessions) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with sessions.begin() as session:
        # 4: suspended; 5: registered and last seen before the round's activity window.
        session.execute(
            update(Participant).where(Participant.id == 4).values(status=ParticipantStatus.suspended)
        )
        old = now - timedelta(days=9)
        session.execute(
            update(Participant).where(Participant.id == 5).values(created_at=old, last_seen_at=old)
        )
    round_id = open_round(sessions, quorum=3, active_since=now - timedelta(days=7))
    assert [submit(sessions, round_id, p) for p in (1, 2, 3)] == [False, False, True]
    # Every active organization submitted, but fewer than the quorum: the round waits for its deadline.
    short = open_round(sessions, quorum=4, active_since=now - timedelta(days=7))
    assert [submit(sessions, short, p) for p in (1, 2, 3)] == [False, False, False]
    with sessions.begin() as session:
        assert pipeline.claim_closes(session, utcnow(), LEASE) == []
        # (The first round's request is a lease old by then: sent again, as any lost message is.)
        assert short in pipeline.claim_closes(session, now + timedelta(hours=2), LEASE)


def test_a_cohort_round_closes_once_every_invited_organization_submitted(sessions) -> None:  # type: ignore[no-untyped-def]
    """A Flower server's sample (organizations 1-3 of the 5 active): the round closes at the third
    invited update, without waiting for the two organizations nobody asked, and not before."""
    invited = [f"0x{i:040x}" for i in (1, 2, 3)]
    round_id = open_round(sessions, quorum=3, cohort=invited)
    assert [submit(sessions, round_id, p) for p in (1, 2, 3)] == [False, False, True]
    # The quorum still counts: a cohort larger than the updates so far never closes early.
    wider = open_round(sessions, quorum=2, cohort=[f"0x{i:040x}" for i in range(1, 6)])
    assert [submit(sessions, wider, p) for p in (1, 2, 3, 4)] == [False] * 4


def test_an_extended_round_can_be_requested_again_and_a_post_is_requested_once(sessions) -> None:  # type: ignore[no-untyped-def]
    round_id = open_round(sessions, quorum=1)
    assert [submit(sessions, round_id, p) for p in range(1, 6)][-1]
    with sessions.begin() as session:
        pipeline.release_close(session, round_id)  # the close extended the deadline: OPEN again
        assert pipeline.claim_closes(session, utcnow(), LEASE) == [round_id]
        session.execute(update(Round).where(Round.id == round_id).values(status=RoundStatus.aggregated))
        now = utcnow()
        assert pipeline.claim_post(session, round_id, now)
        assert not pipeline.claim_post(session, round_id, now)
        assert pipeline.claim_posts(session, now, LEASE) == []
        assert pipeline.claim_posts(session, now + timedelta(seconds=LEASE + 1), LEASE) == [round_id]
