"""``fedledger blobs sweep``: remove the encrypted updates a crash left without their submission row."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

blobs_app = typer.Typer(
    help="The blob store (models and encrypted updates, content-addressed).",
    no_args_is_help=True,
    add_completion=False,
)


@blobs_app.command("sweep")
def sweep(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be removed; remove nothing.")
    ] = False,
    grace_seconds: Annotated[
        int | None,
        typer.Option(
            "--grace-seconds",
            min=0,
            help="Keep files younger than this (default: FEDLEDGER_BLOB_SWEEP_GRACE_SECONDS).",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
) -> None:
    """Remove encrypted updates that no submission row names (a crash between a submission's fsync and its
    commit leaves one), once older than the grace period. Safe beside a running API and workers; the API
    also runs it when it starts. Model weights and other files are never removed."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.session import read_session_factory, session_factory
    from fedledger.config import get_settings
    from fedledger.domain.blob_backends import open_blob_store
    from fedledger.domain.blobsweep import sweep_orphans

    settings = get_settings()
    url = settings.resolved_database_url
    blobs = open_blob_store(settings)
    try:
        report = sweep_orphans(
            session_factory(url),
            blobs,
            grace_seconds=settings.blob_sweep_grace_seconds if grace_seconds is None else grace_seconds,
            dry_run=dry_run,
            read_sessions=read_session_factory(url),
        )
    except SQLAlchemyError as exc:
        typer.echo(
            f"error: cannot read the database at {url.split('@')[-1]} ({type(exc).__name__}); "
            "is FEDLEDGER_DATABASE_URL right, and the schema up to date (`fedledger db upgrade`)?",
            err=True,
        )
        raise typer.Exit(1) from None
    if json_out:
        typer.echo(json.dumps(asdict(report), sort_keys=True))
    else:
        verb = "would remove" if dry_run else "removed"
        for digest in report.removed:
            typer.echo(f"{verb} {digest}")
        typer.echo(f"{blobs.location}: {report.summary()}")
        for error in report.errors:
            typer.echo(f"error: {error}", err=True)
    if report.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(blobs_app, name="blobs")
