"""Celery tasks: thin wrappers that build the services from the settings and call the pipeline."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
from celery import Task, group
from celery.utils.log import get_task_logger
from sqlalchemy.orm import Session, sessionmaker

from aggregator.round.compute import RoundResult
from aggregator.round.server_update import server_data
from aggregator.round.sharding import plan_shards
from aggregator.worker.celery_app import app
from aggregator.worker.close import Inputs, Signing, close_round
from aggregator.worker.gateway import ChainGateway, ChainWriteError
from aggregator.worker.posting import post_round
from aggregator.worker.shards import (
    COMBINE,
    DERIVE,
    STATISTICS,
    Domain,
    compute_sharded,
    shard_combine,
    shard_derive,
    shard_statistics,
)
from aggregator.worker.upkeep import anchor_audit_head, execute_due_slashes, mirror_reinstatements
from db.base import utcnow
from db.models import RoundStatus
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.tx import TransactionReverted
from fedledger.config import Settings, get_settings
from fedledger.datasets import load_holdout
from fedledger.domain import keys as key_service
from fedledger.domain import pipeline
from fedledger.domain.blobstore import BlobStore, open_blob_store
from fedledger.domain.tasks import (
    ANCHOR_AUDIT_TASK,
    CLOSE_TASK,
    EXECUTE_SLASHES_TASK,
    POST_TASK,
    SHARD_COMBINE_TASK,
    SHARD_DERIVE_TASK,
    SHARD_STATISTICS_TASK,
    TICK_TASK,
    UPDATE_RECEIVED_TASK,
)

log = get_task_logger(__name__)
OWNER = f"{socket.gethostname()}:{os.getpid()}"


Services = tuple[
    Settings, sessionmaker[Session], BlobStore, ChainGateway, Signing, tuple[np.ndarray, np.ndarray]
]


@lru_cache(maxsize=1)
def services() -> Services:
    """What every task works with, built once per worker process from the settings."""
    settings = get_settings()
    sessions = session_factory(settings.resolved_database_url)
    deployments = Deployments.load(settings.resolved_deployments_file)
    gateway = ChainGateway(settings.chain_rpc_url, deployments, settings.resolved_aggregator_key, sessions)
    signing = Signing(
        settings.resolved_model_signer_key, deployments.chain_id, deployments.addresses["ContributionLedger"]
    )
    return (
        settings,
        sessions,
        open_blob_store(settings),
        gateway,
        signing,
        load_holdout(settings.holdout),
    )


@app.task(name=UPDATE_RECEIVED_TASK)
def update_received(round_id: int) -> str:
    """Kept for messages sent by an older API: requests the close only if it is due early (every active
    organization submitted) and no close was requested yet (the API requests it in the submission's
    transaction)."""
    _, sessions, *_ = services()
    with sessions.begin() as session:
        requested = pipeline.request_early_close(session, round_id, utcnow())
    if requested:
        close.delay(round_id)
    return "close-requested" if requested else "nothing-to-do"


@app.task(name=CLOSE_TASK, bind=True, max_retries=10, retry_backoff=True, retry_backoff_max=60)
def close(self: Task, round_id: int) -> str:
    """Close the round if it is due (deadline, or every active organization submitted; see ``close.acquire``), then request its
    post once."""
    settings, sessions, blobs, gateway, signing, holdout = services()
    started = time.perf_counter()
    result = close_round(
        sessions,
        blobs,
        settings.resolved_key_dir,
        round_id,
        OWNER,
        settings.close_lease_seconds,
        holdout,
        signing,
        sharded=sharded_close,
    )
    log.info("close round %s: %s in %.0f ms", round_id, result, (time.perf_counter() - started) * 1e3)
    with sessions.begin() as session:
        if result == RoundStatus.open.value:
            pipeline.release_close(session, round_id)
        send_post = result == RoundStatus.aggregated.value and pipeline.claim_post(
            session, round_id, utcnow()
        )
    if send_post:
        post.delay(round_id)
    return result


def sharded_close(inputs: Inputs, rng: np.random.Generator, now: datetime) -> RoundResult | None:
    """The round computed across the workers when the settings split it (None: compute it here)."""
    settings, _, blobs, *_, holdout = services()
    size = sum(math.prod(shape) for shape in inputs.model.spec.values())
    ranges = plan_shards(
        size, len(inputs.updates), settings.close_max_bytes_per_worker, settings.close_shards
    )
    if len(ranges) < 2:
        return None
    outcome = compute_sharded(inputs, blobs, holdout, rng, now, ranges, _run_shards)
    if isinstance(outcome, str):
        log.info("close round %s on this worker, not in %d shards: %s", inputs.round.id, len(ranges), outcome)
        return None
    log.info("close round %s: computed in %d shards", inputs.round.id, len(ranges))
    return outcome


def _run_shards(pass_name: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pass of a sharded close: a group of shard tasks on the broker, their results in order."""
    settings = services()[0]
    task = {STATISTICS: shard_statistics_task, DERIVE: shard_derive_task, COMBINE: shard_combine_task}[
        pass_name
    ]
    pending = group(task.s(payload) for payload in payloads).apply_async()
    try:
        # The closing task waits for its shards: other worker slots run them (see close_shard_timeout_seconds).
        results: list[dict[str, Any]] = pending.get(
            timeout=settings.close_shard_timeout_seconds, disable_sync_subtasks=False
        )
    finally:
        pending.forget()
    return results


def _shard_context() -> tuple[BlobStore, dict[str, bytes], Domain]:
    settings, sessions, blobs, _, signing, _ = services()
    with sessions() as session:
        private = key_service.private_keys(session, settings.resolved_key_dir)
    return blobs, private, Domain(signing.chain_id, signing.verifying_contract)


@lru_cache(maxsize=1)
def _validation_features() -> np.ndarray:
    features: np.ndarray = server_data(services()[5])[1][0]
    return features


@app.task(name=SHARD_STATISTICS_TASK, ignore_result=False)
def shard_statistics_task(job: dict[str, Any]) -> dict[str, Any]:
    """First pass of a sharded close: this worker's coordinate range of every update, its partial sums."""
    blobs, private, domain = _shard_context()
    return shard_statistics(job, blobs, private, domain, _validation_features())


@app.task(name=SHARD_DERIVE_TASK, ignore_result=False)
def shard_derive_task(job: dict[str, Any]) -> dict[str, Any]:
    """Second pass of a sharded close under a coordinate-wise rule: the rule's row over this range."""
    blobs, private, domain = _shard_context()
    return shard_derive(job, blobs, private, domain, _validation_features())


@app.task(name=SHARD_COMBINE_TASK, ignore_result=False)
def shard_combine_task(job: dict[str, Any]) -> dict[str, Any]:
    """Last pass of a sharded close: this worker's coordinates of the new model, as a blob."""
    blobs, private, domain = _shard_context()
    return shard_combine(job, blobs, private, domain)


# Seconds before the n-th retry of a post: 1, 2, 4, ... up to this cap.
POST_RETRY_MAX_SECONDS = 300
# A revert that goes away by itself: the period's emission cap is used until the period turns.
WAITS_OUT = {"EmissionCapExceeded"}


def post_retry_delay(retries: int, exc: Exception, chain_now: int | None = None) -> int:
    """Exponential backoff; a post refused by the emission cap waits no longer than the period's end."""
    delay = min(POST_RETRY_MAX_SECONDS, 1 << min(retries, 16))
    if isinstance(exc, TransactionReverted) and exc.error == "EmissionCapExceeded" and chain_now is not None:
        period_ends = int(exc.error_args[-1]) if exc.error_args else 0
        delay = min(delay, max(1, period_ends - chain_now))
    return delay


@app.task(name=POST_TASK, bind=True, max_retries=20)
def post(self: Task, round_id: int) -> str:
    """Write the round's record (and slashes, rewards root) to the chain, exactly once.

    A failure is retried with backoff at once, not only when the beat finds the round again after the close
    lease: a revert too (the emission cap's, until its period turns, without a retry limit), so that posting
    does not stall while the API keeps opening rounds (it refuses beyond ``max_posting_backlog``)."""
    _, sessions, _, gateway, _, _ = services()
    started = time.perf_counter()
    try:
        result = post_round(sessions, gateway, round_id)
    except (ChainWriteError, TransactionReverted, ConnectionError, OSError) as exc:
        chain_now = None
        with contextlib.suppress(Exception):  # the node may be the thing that is down
            chain_now = gateway.chain_time()
        delay = post_retry_delay(self.request.retries, exc, chain_now)
        unlimited = isinstance(exc, TransactionReverted) and exc.error in WAITS_OUT
        log.warning("post round %s failed (%s: %s); retry in %d s", round_id, type(exc).__name__, exc, delay)
        raise self.retry(
            exc=exc, countdown=delay, max_retries=None if unlimited else self.max_retries
        ) from exc
    log.info("post round %s: %s in %.0f ms", round_id, result, (time.perf_counter() - started) * 1e3)
    return result


@app.task(name=TICK_TASK)
def tick() -> dict[str, list[int]]:
    """Find work from the database: closes due (deadline, every active organization submitted, expired lease) and unposted rounds,
    each sent only if no request for it is outstanding (see fedledger.domain.pipeline)."""
    settings, sessions, *_ = services()
    now = utcnow()
    with sessions.begin() as session:
        closes = pipeline.claim_closes(session, now, settings.close_lease_seconds)
        posts = pipeline.claim_posts(session, now, settings.close_lease_seconds)
    for round_id in closes:
        close.delay(round_id)
    for round_id in posts:
        post.delay(round_id)
    return {"close": closes, "post": posts}


@app.task(name=EXECUTE_SLASHES_TASK)
def execute_slashes() -> dict[str, str]:
    """Execute the queued slashes whose delay is over and mirror a guardian's reinstatements (a failure
    waits for the next beat: nothing is lost, the pending slashes and the registry's standing stay
    on-chain)."""
    _, sessions, _, gateway, _, _ = services()
    executed = execute_due_slashes(sessions, gateway)
    if executed:
        log.info("executed queued slashes: %s", executed)
    reinstated = mirror_reinstatements(sessions, gateway)
    if reinstated:
        log.info("reinstated on-chain, active again: %s", reinstated)
    return executed


@app.task(name=ANCHOR_AUDIT_TASK)
def anchor_audit() -> dict[str, int | str]:
    """Anchor the audit log's head on-chain if it grew since the last anchor."""
    _, sessions, _, gateway, _, _ = services()
    sent = anchor_audit_head(sessions, gateway)
    if sent is None:
        return {}
    log.info("anchored the audit head at entry %d: %s", sent[1], sent[0])
    return {"tx_hash": sent[0], "count": sent[1]}
