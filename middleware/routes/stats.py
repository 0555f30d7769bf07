"""JSON the dashboard reads: rounds, contributions, participants, token economics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from db.models import (
    Aggregation,
    Contribution,
    ModelStatus,
    ModelVersion,
    Participant,
    ParticipantStatus,
    Round,
    RoundStatus,
    Update,
)
from middleware.deps import MAX_ID, RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses
from middleware.routes.participants import to_out as participant_out
from middleware.schemas import ParticipantOut

router = APIRouter(prefix="/v1/stats", tags=["stats"], dependencies=[RateLimited])


def _token(state: StateDep) -> dict[str, Any] | None:
    try:
        figures = state.chain().token_figures()
    except ApiError:
        return None
    return {k: (str(v) if isinstance(v, int) else v) for k, v in figures.__dict__.items()}


@router.get("/overview", responses=responses(429))
def overview(session: SessionDep, state: StateDep) -> dict[str, Any]:
    """Headline numbers; ``token`` is null while the chain is unreachable."""
    current = session.scalars(select(Round).order_by(Round.id.desc())).first()
    model = session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.active)).first()
    return {
        "participants": session.scalar(select(func.count()).select_from(Participant)),
        "active_participants": session.scalar(
            select(func.count())
            .select_from(Participant)
            .where(Participant.status == ParticipantStatus.active)
        ),
        "rounds_completed": session.scalar(
            select(func.count()).select_from(Round).where(Round.status == RoundStatus.posted)
        ),
        "contributions": session.scalar(select(func.count()).select_from(Contribution)),
        "model_version": model.id if model else None,
        "current_round": None
        if current is None
        else {
            "id": current.id,
            "status": current.status.value,
            "deadline": current.deadline.isoformat(),
            "quorum": current.quorum,
            "strategy": current.strategy,
        },
        "token": _token(state),
    }


@router.get("/rounds", responses=responses(429))
def round_history(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Most recent rounds first, with what their close did."""
    rows = session.execute(
        select(Round, Aggregation)
        .outerjoin(Aggregation, Aggregation.round_id == Round.id)
        .order_by(Round.id.desc())
        .limit(limit)
    ).all()
    out = []
    for r, a in rows:
        out.append(
            {
                "id": r.id,
                "status": r.status.value,
                "strategy": r.strategy,
                "opened_at": r.opened_at.isoformat(),
                "deadline": r.deadline.isoformat(),
                "model_version": r.model_version_id,
                "failure_reason": r.failure_reason,
                "aggregation": None
                if a is None
                else {
                    "kept": len(a.kept),
                    "excluded": len(a.excluded),
                    "rejected": len(a.rejected),
                    "rolled_back": a.rolled_back,
                    "holdout_loss_before": a.holdout_loss_before,
                    "holdout_loss_after": a.holdout_loss_after,
                    "holdout_accuracy": a.holdout_accuracy,
                    "epsilon_spent": a.epsilon_spent,
                    "total_reward_wei": a.total_reward_wei,
                    "model_version": a.model_version_id,
                    "tx_hashes": a.tx_hashes,
                },
            }
        )
    return out


@router.get("/contributions", responses=responses(429))
def contributions(
    session: SessionDep,
    round_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    address: Annotated[str | None, Query(max_length=42)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
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
    return [
        {
            "round_id": c.round_id,
            "participant": addr,
            "quality": c.quality,
            "timeliness": c.timeliness,
            "honesty": c.honesty,
            "fitness": c.fitness,
            "kept": c.kept,
            "byzantine": c.byzantine,
            "reward_wei": c.reward_wei,
            "reputation_after": c.reputation_after,
            "evidence": c.evidence or [],
            # Why the update is not in the aggregate (null when kept); an excluded update is not paid.
            "excluded_reason": None if c.kept else reason,
        }
        for c, addr, reason in rows
    ]


@router.get("/participants", response_model=list[ParticipantOut], responses=responses(429))
def participants(session: SessionDep) -> list[ParticipantOut]:
    return [
        ParticipantOut(**participant_out(p))
        for p in session.scalars(select(Participant).order_by(Participant.id))
    ]


@router.get("/token", responses=responses(429, 503))
def token(state: StateDep) -> dict[str, Any]:
    """Supply, stake and treasury as the chain reports them now."""
    figures = _token(state)
    if figures is None:
        raise ApiError(503, "chain_unavailable", "the chain is not reachable")
    return figures
