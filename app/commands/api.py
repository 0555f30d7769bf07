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

    from fedledger.config import InsecureConfiguration, get_settings
    from middleware.app import node_chain_id, server_options

    settings = get_settings()
    try:
        settings.check_production(node_chain_id(settings))
    except InsecureConfiguration as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    options = server_options(settings)
    options.update({k: v for k, v in {"host": host, "port": port}.items() if v})
    uvicorn.run("middleware.app:app", **options)


def register(app: typer.Typer) -> None:
    app.command("api")(api)
