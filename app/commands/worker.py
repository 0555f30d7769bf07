"""``fedledger worker``: a Celery worker for round closes and chain posts, with the beat embedded."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    beat: Annotated[
        bool, typer.Option(help="Run the beat (deadline ticks) in this worker; one per deployment.")
    ] = True,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run an aggregator worker (deadlines, closes, on-chain posts)."""
    from aggregator.celery_app import app

    args = [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        args.append("--beat")
    app.worker_main(args)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
