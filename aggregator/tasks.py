"""Celery tasks: thin wrappers that build the services from the settings and call the pipeline."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from celery.utils.log import get_task_logger
from sqlalchemy import select

from aggregator.celery_app import app
from aggregator.gateway import ChainGateway, ChainWriteError
from aggregator.posting import post_round
from aggregator.round_close import Signing, close_round
from db.base import utcnow
from db.models import Round, RoundStatus
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.config import get_settings
from fedledger.datasets import load_holdout
from fedledger.domain import rounds as round_service
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.tasks import UPDATE_RECEIVED_TASK

log = get_task_logger(__name__)
OWNER = f"{socket.gethostname()}:{os.getpid()}"


@lru_cache(maxsize=1)
def services():  # type: ignore[no-untyped-def]
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
        BlobStore(settings.resolved_blob_dir),
        gateway,
        signing,
        load_holdout(settings.holdout),
    )


@app.task(name=UPDATE_RECEIVED_TASK, bind=True, max_retries=5, default_retry_delay=2)
def update_received(self, round_id: int) -> str:  # type: ignore[no-untyped-def]
    _, sessions, *_ = services()
    with sessions() as session:
        round_ = session.get(Round, round_id)
        if round_ is None or round_.status != RoundStatus.open:
            return "ignored"
        if round_service.submission_count(session, round_id) < round_.quorum:
            return "waiting"
    close.delay(round_id)
    return "quorum"


@app.task(name="fedledger.rounds.close", bind=True, max_retries=10, retry_backoff=True, retry_backoff_max=60)
def close(self, round_id: int) -> str:  # type: ignore[no-untyped-def]
    settings, sessions, blobs, gateway, signing, holdout = services()
    result = close_round(
        sessions,
        blobs,
        settings.resolved_key_dir,
        round_id,
        OWNER,
        settings.close_lease_seconds,
        holdout,
        signing,
    )
    log.info("close round %s: %s", round_id, result)
    if result == RoundStatus.aggregated.value:
        post.delay(round_id)
    return result


@app.task(name="fedledger.rounds.post", bind=True, max_retries=20, retry_backoff=True, retry_backoff_max=60)
def post(self, round_id: int) -> str:  # type: ignore[no-untyped-def]
    _, sessions, _, gateway, _, _ = services()
    try:
        result = post_round(sessions, gateway, round_id)
    except (ChainWriteError, ConnectionError, OSError) as exc:
        raise self.retry(exc=exc) from exc
    log.info("post round %s: %s", round_id, result)
    return result


@app.task(name="fedledger.rounds.tick")
def tick() -> dict[str, list[int]]:
    """Find work from the database: rounds past their deadline, closes whose lease expired, unposted rounds."""
    _, sessions, *_ = services()
    now = utcnow()
    with sessions() as session:
        due = list(
            session.scalars(select(Round.id).where(Round.status == RoundStatus.open, Round.deadline <= now))
        )
        stuck = list(
            session.scalars(
                select(Round.id).where(Round.status == RoundStatus.closing, Round.lease_until < now)
            )
        )
        unposted = list(session.scalars(select(Round.id).where(Round.status == RoundStatus.aggregated)))
    for round_id in due + stuck:
        close.delay(round_id)
    for round_id in unposted:
        post.delay(round_id)
    return {"close": due + stuck, "post": unposted}
