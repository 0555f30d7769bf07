"""JSON the dashboard reads: rounds, contributions, participants, token economics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedledger.api.schemas import (
    AggregationSummaryOut,
    ContributionOut,
    EvidenceOut,
    OverviewOut,
    ParticipantOut,
    RoundBriefOut,
    RoundStatsOut,
    TokenFiguresOut,
)
from fedledger.domain import participants as participant_rows
from fedledger.domain import rounds, stats
from fedledger.evidence import findings_from
from middleware.deps import MAX_ID, RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses
from middleware.routes.participants import to_out as participant_out

router = APIRouter(prefix="/v1/stats", tags=["stats"], dependencies=[RateLimited])


def _posting_backlog_limit(state: StateDep) -> int:
    """The backlog beyond which rounds are refused: the governed one, or the operator's stricter setting
    (the setting alone while the chain is unreachable)."""
    try:
        governed = state.chain().params().integer("max_posting_backlog")
    except ApiError:
        return state.settings.max_posting_backlog
    return min(governed, state.settings.max_posting_backlog)


def _token(state: StateDep) -> TokenFiguresOut | None:
    try:
        figures = state.chain().token_figures()
    except ApiError:
        return None
    # Wei as decimal strings: they exceed JSON's safe integers.
    return TokenFiguresOut(
        total_supply=str(figures.total_supply),
        total_staked=str(figures.total_staked),
        treasury_balance=str(figures.treasury_balance),
        active_participants=figures.active_participants,
        symbol=figures.symbol,
    )


@router.get("/overview", response_model=OverviewOut, responses=responses(429))
def overview(session: SessionDep, state: StateDep) -> OverviewOut:
    """Headline numbers; ``token`` is null while the chain is unreachable."""
    figures = stats.overview(session)
    current = figures.current_round
    return OverviewOut(
        participants=figures.participants,
        active_participants=figures.active_participants,
        rounds_completed=figures.rounds_completed,
        contributions=figures.contributions,
        # Aggregated rounds waiting for their on-chain record (rewards, slashes and activity wait with them).
        posting_backlog=rounds.posting_backlog(session),
        max_posting_backlog=_posting_backlog_limit(state),
        model_version=figures.model_version,
        current_round=None
        if current is None
        else RoundBriefOut(
            id=current.id,
            status=current.status.value,
            deadline=current.deadline,
            quorum=current.quorum,
            strategy=current.strategy,
        ),
        token=_token(state),
    )


@router.get("/rounds", response_model=list[RoundStatsOut], responses=responses(429))
def round_history(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RoundStatsOut]:
    """Most recent rounds first, with what their close did."""
    return [
        RoundStatsOut(
            id=r.id,
            status=r.status.value,
            strategy=r.strategy,
            opened_at=r.opened_at,
            deadline=r.deadline,
            model_version=r.model_version_id,
            failure_reason=r.failure_reason,
            extensions=r.extensions,
            aggregation=None
            if a is None
            else AggregationSummaryOut(
                kept=len(a.kept),
                excluded=len(a.excluded),
                rejected=len(a.rejected),
                rolled_back=a.rolled_back,
                holdout_loss_before=a.holdout_loss_before,
                holdout_loss_after=a.holdout_loss_after,
                holdout_accuracy=a.holdout_accuracy,
                epsilon_spent=a.epsilon_spent,
                total_reward_wei=a.total_reward_wei,
                model_version=a.model_version_id,
                tx_hashes=a.tx_hashes,
            ),
            epsilon_spent=epsilon,
        )
        for r, a, epsilon in stats.round_history(session, limit)
    ]


@router.get("/contributions", response_model=list[ContributionOut], responses=responses(429))
def contributions(
    session: SessionDep,
    round_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    address: Annotated[str | None, Query(max_length=42)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[ContributionOut]:
    return [
        ContributionOut(
            round_id=c.round_id,
            participant=addr,
            quality=c.quality,
            timeliness=c.timeliness,
            honesty=c.honesty,
            fitness=c.fitness,
            kept=c.kept,
            byzantine=c.byzantine,
            reward_wei=c.reward_wei,
            reputation_after=c.reputation_after,
            evidence=[EvidenceOut.of(f) for f in findings_from(c.evidence, c.evidence_detail)],
            excluded_reason=None if c.kept else reason,
        )
        for c, addr, reason in stats.contributions(session, round_id, address, limit)
    ]


@router.get("/participants", response_model=list[ParticipantOut], responses=responses(429))
def participants(session: SessionDep) -> list[ParticipantOut]:
    return [participant_out(p) for p in participant_rows.listing(session)]


@router.get("/token", response_model=TokenFiguresOut, responses=responses(429, 503))
def token(state: StateDep) -> TokenFiguresOut:
    """Supply, stake and treasury as the chain reports them now."""
    figures = _token(state)
    if figures is None:
        raise ApiError(503, "chain_unavailable", "the chain is not reachable")
    return figures
