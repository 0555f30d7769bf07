"""The FastAPI application: ``uvicorn middleware.app:app`` or ``create_app(settings)`` in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from db.migrate import upgrade
from fedledger import __version__
from fedledger.config import Settings, get_settings
from fedledger.domain import keys as key_service
from fedledger.domain.tasks import TaskQueue
from middleware.docs import install_docs
from middleware.errors import install_error_handlers
from middleware.metrics import MetricsMiddleware
from middleware.routes import audit, auth, chain, health, keys, models, participants, rewards, rounds, stats
from middleware.state import AppState


def create_app(settings: Settings | None = None, queue: TaskQueue | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production()
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
    for module in (health, auth, participants, keys, models, rounds, rewards, audit, stats, chain):
        app.include_router(module.router)
    install_docs(app)
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn middleware.app:app`` builds the app from the environment on first access, not at import.
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
