from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedledger.api.schemas import AuditEntryOut, AuditVerification
from fedledger.domain import audit
from middleware.deps import MAX_ID, OperatorPrincipal, RateLimited, SessionDep, StateDep
from middleware.errors import responses

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[RateLimited])


@router.get("", response_model=list[AuditEntryOut], responses=responses(401, 403, 429))
def entries(
    _: OperatorPrincipal,
    session: SessionDep,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    """Audit entries in order (operator)."""
    return [
        AuditEntryOut(
            id=r.id,
            created_at=r.created_at,
            actor=r.actor,
            action=r.action,
            subject=r.subject,
            details=r.details,
            prev_hash=r.prev_hash,
            entry_hash=r.entry_hash,
        )
        for r in audit.entries(session, after_id, limit)
    ]


@router.get("/verify", response_model=AuditVerification, responses=responses(401, 403, 429, 503))
def verify(_: OperatorPrincipal, session: SessionDep, state: StateDep) -> AuditVerification:
    """Recompute the whole hash chain and check it against the heads posted rounds anchored on-chain, so a
    cut tail or a log rewritten with recomputed hashes is found, and how many entries after the last anchor
    only the hash chain protects (operator; 503 without the chain)."""
    anchors = state.chain().audit_anchors()
    result = audit.verify_chain(session, anchors)
    return AuditVerification(
        ok=result.ok,
        entries=result.entries,
        first_bad_id=result.first_bad_id,
        reason=result.reason,
        anchors=len(anchors),
        anchors_checked=result.anchors_checked,
        unanchored_entries=result.unanchored_entries,
        first_unanchored_id=result.first_unanchored_id,
    )
