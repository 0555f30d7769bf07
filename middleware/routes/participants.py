from __future__ import annotations

from fastapi import APIRouter

from db.models import Participant, ParticipantStatus
from fedledger.api.schemas import ParticipantOut, ParticipantStatusOut, RegisterRequest
from fedledger.chain.reader import RegistryStatus
from fedledger.domain import participants
from middleware.deps import CurrentPrincipal, RateLimited, RegisterRateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses

router = APIRouter(prefix="/v1/participants", tags=["participants"], dependencies=[RateLimited])


def to_out(p: Participant) -> ParticipantOut:
    return ParticipantOut(
        address=p.address,
        org_name=p.org_name,
        encryption_key_id=p.encryption_key_id,
        status=p.status.value,
        reputation=p.reputation,
        byzantine_count=p.byzantine_count,
        created_at=p.created_at,
        last_seen_at=p.last_seen_at,
    )


@router.post(
    "",
    response_model=ParticipantOut,
    responses=responses(401, 403, 409, 429, 503),
    dependencies=[RegisterRateLimited],
)
def register(
    body: RegisterRequest, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> ParticipantOut:
    """Register (or update) the signed-in wallet's organization, once it is enrolled on-chain with stake.
    Idempotent."""
    # Stake is what a wallet risks: without it a registration would cost nothing, and throw-away wallets
    # could fill the participant table, the audit log and the public listing. A fresh read: the cached one
    # may be a stale "active", and caching this one would delay a slash being seen by submissions.
    enrollment = state.chain().enrollment(principal.address, fresh=True)
    if enrollment.status == RegistryStatus.none or enrollment.stake <= 0:
        raise ApiError(
            403,
            "not_enrolled",
            f"{principal.address} has no stake on-chain: stake with ParticipantRegistry.enroll first "
            "(`fedledger client enroll`), then register",
        )
    if enrollment.status != RegistryStatus.active:
        raise ApiError(
            403,
            f"participant_{enrollment.status.name}",
            f"{principal.address} is {enrollment.status.name} on-chain and cannot register or change its "
            "registration",
        )
    participant = participants.register(session, principal.address, body.org_name, body.encryption_key_id)
    return to_out(participant)


@router.get("/me", response_model=ParticipantStatusOut, responses=responses(401, 404, 429, 503))
def me(principal: CurrentPrincipal, session: SessionDep, state: StateDep) -> ParticipantStatusOut:
    """The signed-in organization: registration, reputation, on-chain enrollment, and whether it may submit."""
    participant = participants.require(session, principal.address)
    enrollment = state.chain().enrollment(principal.address)
    reason = None
    if enrollment.status == RegistryStatus.none:
        reason = "not enrolled on-chain: stake with ParticipantRegistry.enroll"
    elif enrollment.status != RegistryStatus.active:
        reason = f"{enrollment.status.name} on-chain"
    elif participant.status == ParticipantStatus.slashed:
        # Fresher than a cached "active" (a slash just posted), older than a guardian's reinstatement: a
        # fresh read of the chain settles it, as the submission check does.
        current = state.chain().enrollment(principal.address, fresh=True).status
        if current != RegistryStatus.active:
            reason = f"{current.name} on-chain"
    elif participant.status != ParticipantStatus.active:
        reason = participant.status.value
    return ParticipantStatusOut(
        **to_out(participant).model_dump(),
        chain_status=enrollment.status.name,
        stake_wei=str(enrollment.stake),
        may_submit=reason is None,
        reason=reason,
    )
