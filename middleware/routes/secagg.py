"""The secure-aggregation mode's routes (issue 24): thin; the protocol's state is fedledger.domain.secagg's."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from db.base import utcnow
from db.models import SecAggStep
from fedledger.api.schemas import (
    SecAggAcceptedOut,
    SecAggGroupReportOut,
    SecAggGroupsOut,
    SecAggJoinRequest,
    SecAggMaskedRequest,
    SecAggOut,
)
from fedledger.domain import secagg
from fedledger.secagg.messages import Domain
from middleware.deps import CurrentPrincipal, PathId, RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses
from middleware.routes.rounds import request_close
from middleware.state import AppState

_M = TypeVar("_M", bound=BaseModel)
router = APIRouter(prefix="/v1/rounds", tags=["secure aggregation"], dependencies=[RateLimited])


def env_of(state: AppState) -> secagg.Env:
    """The phases' environment: the ledger's signing domain, the chain's blocks, the settings' timing."""
    chain = state.chain()
    deployments = chain.deployments
    return secagg.Env(
        Domain(deployments.chain_id, deployments.addresses["ContributionLedger"]),
        secagg.Web3Blocks(chain.w3),
        secagg.Timing(state.settings.secagg_join_seconds, state.settings.secagg_step_seconds),
    )


@router.get("/{round_id}/secagg", response_model=SecAggOut, responses=responses(401, 404, 429))
def view(round_id: PathId, principal: CurrentPrincipal, state: StateDep) -> SecAggOut:
    """The round's mode, phase and deadline, seed block, this organization's group, and its group's messages
    that the current step needs. Reading advances a phase whose deadline passed."""
    env = env_of(state)
    with state.sessions.begin() as session:
        return SecAggOut(**secagg.view(session, env, round_id, principal.address, utcnow()))


@router.get("/{round_id}/secagg/groups", response_model=SecAggGroupsOut, responses=responses(404, 409, 429))
def groups(round_id: PathId, session: SessionDep) -> SecAggGroupsOut:
    """A secure round's groups and their outcomes, for everyone: size, threshold, survivors and dropped
    counts, unmasked or failed with the reason, kept or flagged, the group's reward. Never a group's mean;
    members once the round is closed (docs/architecture.md, "Secure aggregation"). 409 ``clear_round``
    for a round in the clear mode, which has no groups."""
    report = secagg.groups_report(session, round_id)
    return SecAggGroupsOut(
        round_id=report.round_id,
        round_status=report.round_status,
        group_size=report.group_size,
        phase=report.phase,
        seed_block=report.seed_block,
        seed_block_hash=report.seed_block_hash,
        seed=report.seed,
        failure_reason=report.failure_reason,
        left_out=report.left_out,
        epsilon_spent=report.epsilon_spent,
        charged_on_failure=report.charged_on_failure,
        groups=[
            SecAggGroupReportOut(
                index=g.index,
                size=g.size,
                threshold=g.threshold,
                status=g.status,
                members=list(g.members) if g.members is not None else None,
                survivors=g.survivors,
                dropped=g.dropped,
                failure_reason=g.failure_reason,
                kept=g.kept,
                flagged=g.flagged,
                reward_wei=str(g.reward_wei),
            )
            for g in report.groups
        ],
    )


def _accepted(state: AppState, round_id: int, accepted: secagg.Accepted) -> SecAggAcceptedOut:
    if accepted.closed:
        # After the commit, so the worker finds every message.
        request_close(state, round_id)
    return SecAggAcceptedOut(
        round_id=round_id,
        step=accepted.step,
        sender=accepted.sender,
        replayed=accepted.replayed,
        receipt_id=accepted.receipt_id,
    )


async def _json(request: Request, state: AppState) -> dict[str, Any]:
    # Read here rather than by a body parameter: a request whose body is not JSON gets a 4xx with the reason
    # (FastAPI's own decoding fails with a 500 on binary bodies), after the path's range checks. The size
    # is bounded while reading, so an oversized body is refused without being buffered whole.
    limit = max_message_bytes(state)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"a secure-aggregation message of {declared} bytes exceeds {limit}")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise ApiError(413, "too_large", f"a secure-aggregation message exceeds {limit} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the body must be a JSON object: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_message", "the body must be a JSON object")
    return body


def _model(model: type[_M], body: dict[str, Any]) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid_message", str(exc)) from exc


def _body_of(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


_ANY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
_STEP_RESPONSES = responses(400, 401, 403, 404, 409, 413, 422, 429)


def max_message_bytes(state: AppState) -> int:
    """The largest message body: a masked vector of the largest update the API takes
    (``max_update_bytes``), base64 (4/3) in JSON, and room for its signed header or a share bundle."""
    return state.settings.max_update_bytes * 4 // 3 + 256 * 1024


@router.post(
    "/{round_id}/secagg/join",
    response_model=SecAggAcceptedOut,
    responses=_STEP_RESPONSES,
    openapi_extra=_body_of(SecAggJoinRequest),
)
async def join(
    round_id: PathId, request: Request, principal: CurrentPrincipal, state: StateDep
) -> SecAggAcceptedOut:
    """Join the round (before the groups are drawn) with a signed ``SecAggJoin(roundId, modelVersion)``."""
    body = _model(SecAggJoinRequest, await _json(request, state))

    def run() -> secagg.Accepted:
        env = env_of(state)
        with state.sessions.begin() as session:
            return secagg.join(session, env, round_id, principal.address, body.signature, utcnow())

    accepted = await run_in_threadpool(run)
    return await run_in_threadpool(_accepted, state, round_id, accepted)


def _receive(
    state: AppState,
    round_id: int,
    address: str,
    step: SecAggStep,
    body: dict[str, Any],
    vector: bytes | None = None,
) -> SecAggAcceptedOut:
    env = env_of(state)
    with state.sessions.begin() as session:
        accepted = secagg.receive(
            session, state.blobs, env, round_id, address, step, body, utcnow(), vector=vector
        )
    return _accepted(state, round_id, accepted)


@router.post(
    "/{round_id}/secagg/keys", response_model=SecAggAcceptedOut, responses=_STEP_RESPONSES, openapi_extra=_ANY
)
async def keys(
    round_id: PathId, request: Request, principal: CurrentPrincipal, state: StateDep
) -> SecAggAcceptedOut:
    """Step 1: the signed key advert (``fedledger.secagg.wire.advert_json``)."""
    body = await _json(request, state)
    return await run_in_threadpool(_receive, state, round_id, principal.address, SecAggStep.keys, body)


@router.post(
    "/{round_id}/secagg/shares",
    response_model=SecAggAcceptedOut,
    responses=_STEP_RESPONSES,
    openapi_extra=_ANY,
)
async def shares(
    round_id: PathId, request: Request, principal: CurrentPrincipal, state: StateDep
) -> SecAggAcceptedOut:
    """Step 2: the signed share bundle, one sealed box per group-mate (``wire.bundle_json``)."""
    body = await _json(request, state)
    return await run_in_threadpool(_receive, state, round_id, principal.address, SecAggStep.shares, body)


@router.post(
    "/{round_id}/secagg/masked",
    response_model=SecAggAcceptedOut,
    responses=_STEP_RESPONSES,
    openapi_extra=_body_of(SecAggMaskedRequest),
)
async def masked(
    round_id: PathId, request: Request, principal: CurrentPrincipal, state: StateDep
) -> SecAggAcceptedOut:
    """Step 3: the signed masked-input header and the masked vector (base64 of its uint32 words, exactly
    4 x the model's dimension bytes)."""
    body = _model(SecAggMaskedRequest, await _json(request, state))
    vector = secagg.decode_vector(body.vector, state.settings.max_update_bytes)
    return await run_in_threadpool(
        _receive, state, round_id, principal.address, SecAggStep.masked, body.masked, vector
    )


@router.post(
    "/{round_id}/secagg/unmask",
    response_model=SecAggAcceptedOut,
    responses=_STEP_RESPONSES,
    openapi_extra=_ANY,
)
async def unmask(
    round_id: PathId, request: Request, principal: CurrentPrincipal, state: StateDep
) -> SecAggAcceptedOut:
    """Step 4: the signed reveal: shares of each survivor's self seed and each dropped member's mask key."""
    body = await _json(request, state)
    return await run_in_threadpool(_receive, state, round_id, principal.address, SecAggStep.unmask, body)
