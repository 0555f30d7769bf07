"""What the dashboard reads of the platform's history: headline counts, rounds with their close, and
contributions with their scores. Reads only; the chain's figures (supply, stake) are the caller's."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.models import (
    Aggregation,
    Contribution,
    Participant,
    ParticipantStatus,
    Round,
    RoundStatus,
    SecAggRound,
    Update,
)
from fedledger.domain import model_versions


@dataclass(frozen=True)
class Overview:
    """Headline counts, the active model version and the latest round (None before the first)."""

    participants: int
    active_participants: int
    rounds_completed: int
    contributions: int
    model_version: int | None
    current_round: Round | None


def _count(session: Session, statement: Select[int]) -> int:
    return int(session.scalar(statement) or 0)


def overview(session: Session) -> Overview:
    """The platform's headline counts now."""
    model = model_versions.active(session)
    return Overview(
        participants=_count(session, select(func.count()).select_from(Participant)),
        active_participants=_count(
            session,
            select(func.count())
            .select_from(Participant)
            .where(Participant.status == ParticipantStatus.active),
        ),
        rounds_completed=_count(
            session, select(func.count()).select_from(Round).where(Round.status == RoundStatus.posted)
        ),
        contributions=_count(session, select(func.count()).select_from(Contribution)),
        model_version=model.id if model else None,
        current_round=session.scalars(select(Round).order_by(Round.id.desc())).first(),
    )


def round_history(session: Session, limit: int) -> list[tuple[Round, Aggregation | None, float | None]]:
    """The ``limit`` most recent rounds, newest first, each with its aggregation (None if it has none) and
    the accountant's epsilon after it (its aggregation's, or the release charge of a secure round that
    failed after unmasking groups; None when it was not charged)."""
    rows = session.execute(
        select(Round, Aggregation, SecAggRound.epsilon_spent)
        .outerjoin(Aggregation, Aggregation.round_id == Round.id)
        .outerjoin(SecAggRound, SecAggRound.round_id == Round.id)
        .order_by(Round.id.desc())
        .limit(limit)
    ).all()
    return [(r, a, a.epsilon_spent if a is not None else released) for r, a, released in rows]


def contributions(
    session: Session, round_id: int | None, address: str | None, limit: int
) -> list[tuple[Contribution, str, str | None]]:
    """Contributions with their participant's address and their update's rejection reason (None if it
    was not rejected), newest round first; filtered by round and by address (any letter case) when given."""
    query = (
        select(Contribution, Participant.address, Update.rejection_reason)
        .join(Participant, Participant.id == Contribution.participant_id)
        .join(Update, Update.id == Contribution.update_id)
    )
    if round_id is not None:
        query = query.where(Contribution.round_id == round_id)
    if address is not None:
        query = query.where(func.lower(Participant.address) == address.lower())
    rows = session.execute(query.order_by(Contribution.round_id.desc(), Contribution.id).limit(limit)).all()
    return [(c, addr, reason) for c, addr, reason in rows]
