"""When a round needs a close or a post, decided from the round's state alone (never by timing).

A round costs one close and one post, however many submissions arrive or beat ticks pass. Each request is
a conditional UPDATE that stamps ``close_requested_at`` / ``post_requested_at`` only if the round's state
calls for the work and no request is outstanding; whoever's UPDATE changed the row sends the message,
everybody else sends nothing. A request is outstanding for ``resend_after`` seconds (the close lease):
after that the message is taken as lost with the broker and the beat sends it again (a close or post
that runs twice is harmless: the close takes a lease, the post writes the chain exactly once).

The same conditions guard the close itself (:func:`close_due`): a message on the broker cannot close an
OPEN round before it is due, whoever sent it.

When a round is due (issue 20, the race to quorum): at its deadline, or earlier only once every active
organization has submitted (status active, and seen or registered since the round's ``active_since``, the
governed activity timeout before it opened) and at least its quorum. A count alone never closes a round
early: attackers who submit at the opening without training would reach any quorum first and make up every
round. The quorum is the fewest updates the deadline's close aggregates (see the worker's close).

A round opened for a cohort (the operator's invitation list, e.g. a Flower server's sample) waits for the
cohort instead: only its members may submit (the submission's checks), so it closes early once every one of
them has. A fast minority still decides nothing: the operator chose who is invited, and all of them count.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Table, bindparam, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from db.models import Participant, ParticipantStatus, Round, RoundStatus, SecAggPhase, SecAggRound, Update


def submissions_of_round() -> ColumnElement[int]:
    """Correlated count of the round's accepted submissions (for a WHERE on ``rounds``)."""
    return (
        select(func.count())
        .select_from(Update)
        .where(Update.round_id == Round.id)
        .correlate(Round)
        .scalar_subquery()
    )


def _everyone_submitted(rounds: Table) -> ColumnElement[bool]:
    """Correlated: no active organization of the round (see the module docstring) is without an update in it."""
    participants, updates = cast(Table, Participant.__table__), cast(Table, Update.__table__)
    waiting_for = (
        select(participants.c.id)
        .where(
            participants.c.status == ParticipantStatus.active,
            rounds.c.active_since.is_(None)
            | (
                func.coalesce(participants.c.last_seen_at, participants.c.created_at) >= rounds.c.active_since
            ),
            # Correlated to the outer round explicitly: left to auto-correlation (which looks only at the
            # enclosing SELECT) it read ``FROM updates, rounds``, an update in ANY round, so from the second
            # round on the quorum alone closed a round early (a fast minority won the race again).
            ~select(updates.c.id)
            .where(updates.c.round_id == rounds.c.id, updates.c.participant_id == participants.c.id)
            .correlate(rounds, participants)
            .exists(),
        )
        .correlate(rounds)
    )
    return ~waiting_for.exists()


def _early_close(rounds: Table) -> ColumnElement[bool]:
    """Before its deadline: at least the round's quorum, and every invited organization submitted (a cohort:
    only members' updates are accepted, so the count) or, without a cohort, every active one."""
    updates = cast(Table, Update.__table__)
    count = (
        select(func.count())
        .select_from(updates)
        .where(updates.c.round_id == rounds.c.id)
        .correlate(rounds)
        .scalar_subquery()
    )
    whole_cohort = rounds.c.cohort_size.is_not(None) & (count >= rounds.c.cohort_size)
    every_active = rounds.c.cohort_size.is_(None) & _everyone_submitted(rounds)
    return (count >= rounds.c.quorum) & (whole_cohort | every_active)


def _secure(rounds: Table, closed: bool) -> ColumnElement[bool]:
    """Correlated: the round runs in the secure-aggregation mode and its protocol is (not) over."""
    secure = cast(Table, SecAggRound.__table__)
    phase = secure.c.phase == SecAggPhase.closed if closed else secure.c.phase != SecAggPhase.closed
    return select(secure.c.round_id).where(secure.c.round_id == rounds.c.id, phase).correlate(rounds).exists()


def close_due(now: datetime) -> ColumnElement[bool]:
    """A round may be closed: OPEN and past its deadline or with every active organization's update (see the
    module docstring), or CLOSING with its lease expired (a worker died mid-close).

    A secure-aggregation round closes once its protocol is over (every phase ended: fedledger.domain.secagg)
    and never before, deadline or not: its masked inputs cannot be unmasked before the reveals are in."""
    rounds = cast(Table, Round.__table__)
    ready = (Round.deadline <= now) | _early_close(rounds) | _secure(rounds, closed=True)
    return ((Round.status == RoundStatus.open) & ~_secure(rounds, closed=False) & ready) | (
        (Round.status == RoundStatus.closing) & (Round.lease_until.is_(None) | (Round.lease_until < now))
    )


def _not_outstanding(
    column: InstrumentedAttribute[datetime | None], now: datetime, resend_after: float | None
) -> ColumnElement[bool]:
    if resend_after is None:
        return column.is_(None)
    return column.is_(None) | (column < now - timedelta(seconds=resend_after))


# Core, on the tables, built once (this runs in every submission's transaction): the same statement as the
# ORM's, without its construction and ORM overhead on each call.
_rounds, _updates = cast(Table, Round.__table__), cast(Table, Update.__table__)
_EARLY_CLOSE = (
    update(_rounds)
    .where(
        _rounds.c.id == bindparam("b_round"),
        _rounds.c.status == RoundStatus.open,
        _rounds.c.close_requested_at.is_(None),
        _early_close(_rounds),
    )
    .values(close_requested_at=bindparam("b_now", type_=_rounds.c.close_requested_at.type))
)


def request_early_close(session: Session, round_id: int, now: datetime) -> bool:
    """In the transaction that inserted a submission: request the round's close if that insert was the last
    active organization's (and the quorum is met) and nobody requested it yet. True means: send the close
    after the commit. Otherwise the round waits for its deadline (the beat requests that close).

    The caller holds the round row locked (PostgreSQL ``FOR UPDATE``; SQLite's write lock), so
    concurrent submissions count one after another and exactly one of them sees the round complete first.
    """
    result = session.execute(_EARLY_CLOSE, {"b_round": round_id, "b_now": now})
    return _changed(result)


def claim_closes(session: Session, now: datetime, resend_after: float) -> list[int]:
    """The beat's half: rounds whose close is due and not outstanding, each stamped as requested."""
    candidates = session.scalars(
        select(Round.id).where(close_due(now), _not_outstanding(Round.close_requested_at, now, resend_after))
    ).all()
    return [
        round_id
        for round_id in candidates
        if _changed(
            session.execute(
                update(Round)
                .where(
                    Round.id == round_id,
                    close_due(now),
                    _not_outstanding(Round.close_requested_at, now, resend_after),
                )
                .values(close_requested_at=now)
                .execution_options(synchronize_session=False)
            )
        )
    ]


def release_close(session: Session, round_id: int) -> None:
    """The close gave the round back OPEN (deadline extended): a later deadline or early close requests again."""
    session.execute(
        update(Round)
        .where(Round.id == round_id, Round.status == RoundStatus.open)
        .values(close_requested_at=None)
        .execution_options(synchronize_session=False)
    )


def claim_post(session: Session, round_id: int, now: datetime, resend_after: float | None = None) -> bool:
    """Request the post of an AGGREGATED round unless one is outstanding. True means: send it."""
    return _changed(
        session.execute(
            update(Round)
            .where(
                Round.id == round_id,
                Round.status == RoundStatus.aggregated,
                _not_outstanding(Round.post_requested_at, now, resend_after),
            )
            .values(post_requested_at=now)
            .execution_options(synchronize_session=False)
        )
    )


def claim_posts(session: Session, now: datetime, resend_after: float) -> list[int]:
    """The beat's half: AGGREGATED rounds without an outstanding post, each stamped as requested."""
    candidates = session.scalars(
        select(Round.id).where(
            Round.status == RoundStatus.aggregated,
            _not_outstanding(Round.post_requested_at, now, resend_after),
        )
    ).all()
    return [r for r in candidates if claim_post(session, r, now, resend_after)]


def _changed(result: object) -> bool:
    return int(getattr(result, "rowcount", 0)) == 1
