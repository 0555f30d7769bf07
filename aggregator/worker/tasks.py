"""Celery tasks: thin wrappers that build the services from the settings and call the pipeline."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
from celery import Task, chord
from celery.utils.log import get_task_logger
from sqlalchemy.orm import Session, sessionmaker

from aggregator.round.server_update import server_data
from aggregator.round.sharding import plan_shards
from aggregator.scoring.budget import settings_budget
from aggregator.worker.celery_app import app
from aggregator.worker.close import Signing, close_round, finish, load, renew, round_rng
from aggregator.worker.close_inputs import Inputs
from aggregator.worker.gateway import ChainGateway, ChainWriteError
from aggregator.worker.posting import post_round
from aggregator.worker.shards import (
    COMBINE,
    DERIVE,
    STATISTICS,
    Domain,
    Pass,
    advance,
    begin,
    discard,
    shard_combine,
    shard_derive,
    shard_statistics,
)
from aggregator.worker.temporaries import sweep_temporaries
from aggregator.worker.upkeep import anchor_audit_head, execute_due_slashes, mirror_reinstatements
from db.base import utcnow
from db.models import RoundStatus
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.tx import TransactionReverted
from fedledger.config import Settings, get_settings
from fedledger.datasets import load_holdout
from fedledger.domain import keys as key_service
from fedledger.domain import pipeline, secagg
from fedledger.domain.blob_backends import open_blob_store
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.tasks import (
    ANCHOR_AUDIT_TASK,
    CLOSE_TASK,
    EXECUTE_SLASHES_TASK,
    POST_TASK,
    SHARD_COMBINE_TASK,
    SHARD_DERIVE_TASK,
    SHARD_STATISTICS_TASK,
    SHARD_STEP_TASK,
    SWEEP_TEMPORARIES_TASK,
    TICK_TASK,
    UPDATE_RECEIVED_TASK,
)
from fedledger.payload import parameter_count
from fedledger.secagg.messages import Domain as SigningDomain

log = get_task_logger(__name__)
OWNER = f"{socket.gethostname()}:{os.getpid()}"
# What the close task reports for a round whose sharded close went on in chords.
SHARDING = "sharding"


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
    post once. A sharded close only sends its first pass here: the chord callbacks go on with it."""
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
        score_budget=settings_budget(settings),
    )
    log.info("close round %s: %s in %.0f ms", round_id, result, (time.perf_counter() - started) * 1e3)
    _after_close(round_id, result)
    return result


def _after_close(round_id: int, result: str) -> None:
    """Release a round the close left open (extended), request the post of an aggregated one once."""
    _, sessions, *_ = services()
    with sessions.begin() as session:
        if result == RoundStatus.open.value:
            pipeline.release_close(session, round_id)
        send_post = result == RoundStatus.aggregated.value and pipeline.claim_post(
            session, round_id, utcnow()
        )
    if send_post:
        post.delay(round_id)


def sharded_close(inputs: Inputs, rng: np.random.Generator, now: datetime) -> str | None:
    """Send the round's first pass across the workers when the settings split it ("sharding"; the chord
    callbacks, :func:`shard_step`, go on with it and commit it); None: compute it here."""
    settings, _, blobs, *_, holdout = services()
    size = parameter_count(inputs.model.spec)
    align = settings.update_chunk_coords  # what the SDK seals: shards and blocks at whole chunks
    ranges = plan_shards(
        size, len(inputs.updates), settings.close_max_bytes_per_worker, settings.close_shards, align
    )
    if len(ranges) < 2:
        return None
    step = begin(
        inputs,
        blobs,
        holdout,
        ranges,
        settings.close_block_bytes,
        align,
        settings.close_max_response_bytes,
    )
    if isinstance(step, str):
        log.info("close round %s on this worker, not in %d shards: %s", inputs.round.id, len(ranges), step)
        return None
    _send(step, inputs.round.id, OWNER, now)
    return SHARDING


def _send(step: Pass, round_id: int, owner: str, now: datetime) -> None:
    """One pass of a sharded close as a chord: its shard tasks, then :func:`shard_step` with their results
    (no worker waits for them)."""
    task = {STATISTICS: shard_statistics_task, DERIVE: shard_derive_task, COMBINE: shard_combine_task}[
        step.name
    ]
    callback = shard_step.s(step.state, round_id, owner, now.isoformat())
    chord([task.s(payload) for payload in step.payloads])(callback)


@app.task(name=SHARD_STEP_TASK)
def shard_step(
    results: list[dict[str, Any]], state: dict[str, Any], round_id: int, owner: str, now: str
) -> str:
    """A pass of a sharded close is done: send the next one, or commit the round (as ``owner``, the worker
    that took its lease) and request its post. Each step renews the lease first (a pass longer than
    close_lease_seconds lets another worker take the round over: this one then stops). A failure leaves the
    round to the lease's expiry (the beat's tick closes it again) and its temporary blobs to the sweep."""
    settings, sessions, blobs, _, signing, holdout = services()
    if not renew(sessions, round_id, owner, settings.close_lease_seconds):
        # Taken over (its lease ran out during a pass): the new holder closes it; this one stops here.
        discard(blobs, state, results)
        log.info("close round %s: lease lost during a sharded pass", round_id)
        return "lease-lost"
    inputs = load(sessions, blobs, settings.resolved_key_dir, round_id, settings_budget(settings))
    when = datetime.fromisoformat(now)
    step = advance(inputs, blobs, holdout, round_rng(round_id), when, state, results)
    if isinstance(step, Pass):
        _send(step, round_id, owner, when)
        return f"sent {step.name}"
    log.info("close round %s: computed in %d shards", round_id, len(state["ranges"]))
    result = finish(sessions, blobs, round_id, owner, step, signing)
    log.info("close round %s: %s", round_id, result)
    _after_close(round_id, result)
    return result


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
    """Last pass of a sharded close: this worker's coordinates of the rule's aggregate, as a blob (and its
    and the reference's responses on every validation example, above the score budget)."""
    blobs, private, domain = _shard_context()
    return shard_combine(job, blobs, private, domain, _validation_features())


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
    settings, sessions, _, gateway, signing, _ = services()
    now = utcnow()
    try:
        # Secure rounds' phases that ended (deadline, or everyone sent) move on; one whose protocol is over is
        # then due for its close below.
        env = secagg.Env(
            SigningDomain(signing.chain_id, signing.verifying_contract),
            secagg.Web3Blocks(gateway.w3),
            secagg.Timing(settings.secagg_join_seconds, settings.secagg_step_seconds),
        )
        with sessions.begin() as session:
            secagg.advance_all(session, env, now)
    except Exception as exc:  # noqa: BLE001 - the node may be down; closes and posts go on regardless
        log.warning("advancing secure rounds failed (%s: %s); next tick retries", type(exc).__name__, exc)
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


@app.task(name=SWEEP_TEMPORARIES_TASK)
def sweep_shard_temporaries() -> int:
    """Delete the temporary blobs of sharded closes that ended without deleting them (a killed coordinator),
    and the masked vectors of secure rounds and groups that failed, which nothing will unmask."""
    settings, sessions, blobs, *_ = services()
    report = sweep_temporaries(sessions, blobs, settings.close_lease_seconds)
    if report.deleted:
        log.info("swept %d temporary blobs of ended sharded closes", len(report.deleted))
    vectors = secagg.sweep_vectors(sessions, blobs, settings.close_lease_seconds, utcnow())
    if vectors:
        log.info("swept %d masked vectors of failed secure rounds and groups", len(vectors))
    return len(report.deleted) + len(vectors)
