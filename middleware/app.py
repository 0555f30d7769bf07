"""The FastAPI application: ``fedledger api`` (uvicorn with :func:`server_options`) or ``create_app(settings)``
in tests.

Forwarded headers (``X-Forwarded-For``/``-Proto``) are believed only from ``FEDLEDGER_TRUSTED_PROXIES``,
by this app, not by uvicorn: uvicorn's own default trusts them from any local peer, which let a client
choose its own IP and escape the per-IP rate limit. Run uvicorn yourself only with ``--no-proxy-headers``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import requests
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from web3 import Web3
from web3.exceptions import Web3Exception

from db.migrate import upgrade
from fedledger import __version__
from fedledger.chain.deployments import ChainIdentity, Deployments, DeploymentsError
from fedledger.config import Settings, get_settings
from fedledger.domain import blobsweep, deployment
from fedledger.domain import keys as key_service
from fedledger.domain.tasks import TaskQueue
from middleware.docs import install_docs
from middleware.errors import install_error_handlers
from middleware.metrics import MetricsMiddleware
from middleware.routes import (
    audit,
    auth,
    chain,
    health,
    keys,
    models,
    participants,
    rewards,
    rounds,
    secagg,
    stats,
)
from middleware.state import AppState

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, queue: TaskQueue | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production(node_chain_id(settings))
    state = AppState(settings, queue=queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.auto_migrate:
            upgrade(settings.resolved_database_url)
        # A server that cannot receive updates is useless: make sure a current key exists.
        with state.sessions.begin() as session:
            if key_service.current(session) is None:
                key_service.rotate(session, key_service.ensure_dir(settings.resolved_key_dir), "system")
        # Refuse a database written for another deployment (e.g. a kept volume beside a restarted chain).
        with contextlib.suppress(DeploymentsError), state.sessions.begin() as session:
            deployments = Deployments.load(settings.resolved_deployments_file)
            deployment.bind(session, deployments, node_identity(settings, deployments))
        sweep_orphan_blobs(state)
        yield

    app = FastAPI(
        title="fedledger API",
        version=__version__,
        description="Federated learning rounds, encrypted signed updates, models and audit for fedledger.",
        lifespan=lifespan,
        # Served by install_docs from local assets instead of FastAPI's CDN pages (blank offline).
        docs_url=None,
        redoc_url=None,
    )
    app.state.fl = state
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-Update-Signature"],
        expose_headers=["X-Model-Hash", "X-Model-Signature", "X-Model-Version", "Retry-After"],
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.trusted_proxies:
        # Added last, so it runs first: every later layer (rate limits included) sees the real client.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    for module in (health, auth, participants, keys, models, rounds, secagg, rewards, audit, stats, chain):
        app.include_router(module.router)
    install_docs(app)
    return app


def node_chain_id(settings: Settings) -> int | None:
    """The chain id the node at ``chain_rpc_url`` answers, or None when it does not answer now (then the
    settings' ``chain_id`` is all there is; every later chain read checks the deployments' chain id)."""
    w3 = Web3(Web3.HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 5}))
    try:
        return int(w3.eth.chain_id)
    except (Web3Exception, requests.RequestException, OSError, ValueError):
        return None


def node_identity(settings: Settings, deployments: Deployments) -> ChainIdentity | None:
    """The chain's block hashes, if the node answers now (it may start after the API: the first chain read
    then checks them, see AppState.chain)."""
    w3 = Web3(Web3.HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 5}))
    try:
        if w3.eth.chain_id != deployments.chain_id:
            return None  # another chain altogether: every chain read says so (AppState.chain)
        return deployments.identity(w3)
    except (Web3Exception, requests.RequestException, OSError):
        return None


def sweep_orphan_blobs(state: AppState) -> None:
    """Best effort at start-up: remove the sealed updates a crash left without their row (a failure is logged
    and the API starts anyway; ``fedledger blobs sweep`` does the same on demand)."""
    try:
        report = blobsweep.sweep_orphans(
            state.sessions,
            state.blobs,
            grace_seconds=state.settings.blob_sweep_grace_seconds,
            read_sessions=state.read_sessions,
        )
    except Exception:
        logger.warning("blob sweep at start-up failed; the API starts anyway", exc_info=True)
        return
    # A warning when it removed something: orphans mean a crash between a submission's fsync and commit.
    level = logging.WARNING if report.removed or report.temporary_removed or report.errors else logging.INFO
    logger.log(level, "blob sweep at start-up: %s", report.summary())
    for error in report.errors:
        logger.warning("blob sweep: %s", error)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for serving this app: forwarded headers are the app's business (see above)."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": settings.log_level.lower(),
        "proxy_headers": False,
    }


def __getattr__(name: str) -> Any:
    # ``uvicorn middleware.app:app`` builds the app from the environment on first access, not at import.
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
