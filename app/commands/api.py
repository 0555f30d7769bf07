"""``fedledger api``: the HTTP API (uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer


def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings).")] = None,
) -> None:
    """Run the middleware API."""
    import uvicorn

    from fedledger.config import get_settings

    settings = get_settings()
    uvicorn.run(
        "middleware.app:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=settings.log_level.lower(),
    )


def register(app: typer.Typer) -> None:
    app.command("api")(api)
