from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.status import HTTP_202_ACCEPTED

from db.models import Round
from fedledger.api.schemas import OpenRoundRequest, ReceiptOut, RoundOut
from fedledger.crypto.chunked import is_chunked
from fedledger.datasets import holdout_size
from fedledger.domain import pipeline, rounds, secagg, submissions
from fedledger.domain.errors import DomainError
from middleware.deps import (
    CurrentPrincipal,
    PathId,
    RateLimited,
    RoundRunnerPrincipal,
    SessionDep,
    StateDep,
)
from middleware.errors import ApiError, responses
from middleware.state import AppState

router = APIRouter(prefix="/v1/rounds", tags=["rounds"], dependencies=[RateLimited])

ENVELOPE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def to_out(session: SessionDep, r: Round) -> RoundOut:
    return RoundOut(
        id=r.id,
        status=r.status.value,
        model_version=r.model_version_id,
        opened_at=r.opened_at,
        deadline=r.deadline,
        quorum=r.quorum,
        cohort=r.cohort,
        min_participants=r.min_participants,
        strategy=r.strategy,
        submissions=rounds.submission_count(session, r.id),
        extensions=r.extensions,
        closed_at=r.closed_at,
        failure_reason=r.failure_reason,
        params=r.params,
    )


@router.post("", response_model=RoundOut, status_code=201, responses=responses(401, 403, 409, 422, 429, 503))
def open_round(
    body: OpenRoundRequest, principal: RoundRunnerPrincipal, session: SessionDep, state: StateDep
) -> RoundOut:
    """Open a round on the active model (operator or round runner), with the governed parameters read from the chain now."""
    settings = state.settings
    try:
        examples = holdout_size(settings.holdout)
    except (OSError, ValueError) as exc:
        raise ApiError(409, "holdout_unavailable", f"the server's holdout cannot be read: {exc}") from exc
    server_data = rounds.ServerData(settings.holdout, examples, settings.min_holdout_examples)
    params = state.chain().params()
    return to_out(
        session,
        rounds.open_round(
            session,
            params,
            principal.address,
            body.duration_seconds,
            body.quorum,
            max_posting_backlog=state.settings.max_posting_backlog,
            cohort=body.cohort,
            server_data=server_data,
            secagg_timing=secagg.Timing(settings.secagg_join_seconds, settings.secagg_step_seconds),
        ),
    )


@router.get("/current", response_model=RoundOut, responses=responses(404, 429))
def current(session: SessionDep) -> RoundOut:
    """The round in progress, or else the most recent one."""
    r = rounds.in_progress(session) or rounds.latest(session)
    if r is None:
        raise ApiError(404, "no_round", "no round has been opened yet")
    return to_out(session, r)


@router.get("/{round_id}", response_model=RoundOut, responses=responses(404, 429))
def get(round_id: PathId, session: SessionDep) -> RoundOut:
    return to_out(session, rounds.get(session, round_id))


@router.post("/{round_id}/close", response_model=RoundOut, responses=responses(401, 403, 404, 409, 429))
def close(round_id: PathId, principal: RoundRunnerPrincipal, state: StateDep) -> RoundOut:
    """Close an OPEN round now (operator or round runner): the worker aggregates the updates it has, or fails the round
    if they are too few (no deadline extension follows)."""
    with state.sessions.begin() as session:
        rounds.close_now(session, round_id, principal.address)
    request_close(state, round_id)
    with state.sessions() as session:
        return to_out(session, rounds.get(session, round_id))


@router.post(
    "/{round_id}/updates",
    response_model=ReceiptOut,
    status_code=HTTP_202_ACCEPTED,
    responses=responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
    openapi_extra=ENVELOPE_BODY,
)
async def submit_update(
    round_id: PathId,
    request: Request,
    principal: CurrentPrincipal,
    state: StateDep,
    x_update_signature: Annotated[
        str, Header(max_length=200, description="EIP-712 Update signature (0x hex)")
    ],
) -> ReceiptOut:
    """Submit an encrypted update (the envelope bytes) with the wallet's EIP-712 signature.

    The same bytes again return the same receipt; a different payload for the same round is refused (409).
    """
    whole = state.settings.max_update_bytes
    # A chunked envelope is checked a chunk at a time (never decrypted whole): it has its own, larger limit.
    largest = max(whole, state.settings.max_chunked_update_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > largest:
        state.metrics.rejections.labels("too_large").inc()
        raise ApiError(413, "too_large", f"update of {declared} bytes exceeds the limit of {largest}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        chunked = is_chunked(bytes(body[:4]))
        limit = largest if chunked else whole
        if len(body) > limit:
            state.metrics.rejections.labels("too_large").inc()
            if chunked:
                raise ApiError(413, "too_large", f"a chunked update may have at most {limit} bytes")
            raise ApiError(
                413,
                "too_large",
                f"an unchunked (version 1) update may have at most {limit} bytes; seal a larger one in chunks "
                f"(the SDK's chunked envelope), which may have up to {largest}",
            )
    envelope = bytes(body)
    body.clear()  # one copy of the ciphertext, not two, while it is checked
    chain = state.chain()
    # The checks and the durable write are blocking (signature recovery, decryption, fsync, commit): they run
    # in the thread pool so the event loop keeps answering other requests (health checks) during a burst.
    try:
        receipt = await run_in_threadpool(
            submissions.submit,
            state.read_sessions,
            state.sessions,
            chain=chain,
            blobs=state.blobs,
            key_directory=state.settings.resolved_key_dir,
            subject=principal.address,
            round_id=round_id,
            envelope=envelope,
            signature=x_update_signature,
        )
    except DomainError as exc:
        state.metrics.rejections.labels(exc.code).inc()
        raise
    state.metrics.submissions.labels("replayed" if receipt.replayed else "accepted").inc()
    if receipt.close_requested:
        # After the commit, so the worker finds every row.
        await run_in_threadpool(request_close, state, round_id)
    fields = {k: v for k, v in receipt.__dict__.items() if k != "close_requested"}
    return ReceiptOut(**fields)


def request_close(state: AppState, round_id: int) -> None:
    """Send the round's one close. If the broker is down the updates are still safe: the request is
    withdrawn, and the beat, which finds due rounds in the database, sends it."""
    try:
        if state.queue is None:
            raise RuntimeError("no task queue is configured")
        state.queue.request_close(round_id)
    except Exception:  # noqa: BLE001 - the submission is durable; the notification is best effort
        state.metrics.rejections.labels("queue_unavailable").inc()
        with state.sessions.begin() as session:
            pipeline.release_close(session, round_id)
