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
    _check_aggregator_account()
    from aggregator.worker.celery_app import app

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


def _check_aggregator_account() -> None:
    """Refuse to start when the aggregator key cannot post (no roles, no gas); warn when the chain is down."""
    from eth_account import Account
    from web3 import Web3

    from fedledger.chain.deployments import Deployments, DeploymentsError
    from fedledger.chain.preflight import aggregator_problems
    from fedledger.config import InsecureConfiguration, get_settings

    settings = get_settings()
    try:
        address = Account.from_key(settings.resolved_aggregator_key).address
        deployments = Deployments.load(settings.resolved_deployments_file)
    except (InsecureConfiguration, DeploymentsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    w3 = Web3(Web3.HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 10}))
    try:
        problems = aggregator_problems(w3, deployments, address)
    except Exception as exc:  # noqa: BLE001 - any RPC failure: the gateway retries posts once the chain is back
        typer.echo(
            f"warning: could not check the aggregator account on {settings.chain_rpc_url}: {exc}", err=True
        )
        return
    if problems:
        typer.echo("error: the aggregator account cannot post rounds:", err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
