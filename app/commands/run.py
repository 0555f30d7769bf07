"""``fedledger run`` (what ``make run`` starts) and ``fedledger simulate``."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

from fedledger.config import get_settings


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(
    orgs: Annotated[int, typer.Option(help="Simulated organizations.")] = 8,
    byzantine: Annotated[int, typer.Option(help="How many of them attack.")] = 2,
    attack: Annotated[str, typer.Option(help="scaling, signflip, noise, labelflip or alie.")] = "scaling",
    rounds: Annotated[int, typer.Option(help="Rounds the start-up simulation runs (0: none).")] = 5,
    dashboard: Annotated[bool, typer.Option(help="Start the dashboard.")] = True,
) -> None:
    """Start everything on the embedded defaults: a dev chain with the contracts, the API, a worker and the
    dashboard; run a short simulation so there is data; stop everything on Ctrl-C."""
    from eth_account import Account

    from app.launcher import LaunchError, Supervisor
    from app.simulation import simulate
    from fedledger.chain.devnode import DevChain
    from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key

    # Ctrl-C and a plain `kill` both stop everything cleanly, also when started in the background (where a
    # shell hands SIGINT over ignored) or by a supervisor that sends SIGTERM.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    settings = get_settings()
    # The dev chain lives in memory: every run starts a new one, so its database, keys and blobs start anew.
    run_dir = settings.data_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    logs = run_dir / "logs"
    operator = Account.from_key(dev_private_key(0)).address
    node = DevChain(port=urlparse(settings.chain_rpc_url).port or 8545, log_path=logs / "chain.log")
    supervisor: Supervisor | None = None
    try:
        typer.echo(f"starting the dev chain on {node.rpc_url} ...")
        node.start()
        deployments = node.deploy(run_dir / "deployments.json")
        env = dict(
            os.environ,
            FEDLEDGER_DATA_DIR=str(run_dir),
            FEDLEDGER_DEPLOYMENTS_FILE=str(run_dir / "deployments.json"),
            FEDLEDGER_CHAIN_RPC_URL=node.rpc_url,
            FEDLEDGER_OPERATOR_ADDRESSES=operator,
            FEDLEDGER_TICK_SECONDS="2",
        )
        supervisor = Supervisor(logs, env)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        api = supervisor.start("api", "api")
        supervisor.wait_http(api, f"{api_url}/healthz")
        supervisor.start("worker", "worker")
        dashboard_url = f"http://{settings.dashboard_host}:{settings.dashboard_port}"
        if dashboard:
            supervisor.start("dashboard", "dashboard")
        typer.echo(
            f"API {api_url}/docs · chain {node.rpc_url} (chain id {deployments.chain_id}) · logs {logs}"
        )
        if rounds > 0:
            typer.echo(f"simulating {orgs} organizations ({byzantine} {attack}) for {rounds} rounds ...")
            simulate(
                api_url,
                node.rpc_url,
                orgs=orgs,
                byzantine=byzantine,
                attack=attack,
                rounds=rounds,
                operator_key=dev_private_key(0),
                log=typer.echo,
                report_path=run_dir / "simulation-report.json",
                sleep=lambda seconds: (supervisor.check(), time.sleep(seconds)),
            )
        wallet_index = FIRST_ORGANIZATION_INDEX
        typer.echo("")
        typer.echo(f"dashboard  {dashboard_url}" if dashboard else "dashboard  (not started)")
        typer.echo(f"API        {api_url}/docs")
        typer.echo(f"chain      {node.rpc_url}  chain id {deployments.chain_id}")
        typer.echo(
            "MetaMask: add the network above and import the dev organization key (dev chain only, public):"
        )
        typer.echo(
            f"  {Account.from_key(dev_private_key(wallet_index)).address}  {dev_private_key(wallet_index)}"
        )
        typer.echo("Ctrl-C stops everything.")
        while True:
            supervisor.check()
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping ...")
    except LaunchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        node.stop()


def simulate_command(
    api_url: Annotated[str, typer.Option("--api", help="API base URL.")] = "http://127.0.0.1:8000",
    rpc_url: Annotated[str, typer.Option("--rpc", help="Chain RPC URL.")] = "http://127.0.0.1:8545",
    orgs: Annotated[int, typer.Option(help="Organizations (dev accounts #3..).")] = 8,
    byzantine: Annotated[int, typer.Option(help="How many attack.")] = 2,
    attack: Annotated[str, typer.Option(help="scaling, signflip, noise, labelflip or alie.")] = "scaling",
    rounds: Annotated[int, typer.Option(help="Rounds.")] = 5,
    partition: Annotated[str, typer.Option(help="iid or dirichlet.")] = "iid",
    report: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path(
        "var/simulation-report.json"
    ),
) -> None:
    """Run simulated organizations through a running stack (API, worker, dev chain)."""
    from app.simulation import SimulationError, simulate
    from fedledger.devkeys import dev_private_key

    try:
        simulate(
            api_url,
            rpc_url,
            orgs=orgs,
            byzantine=byzantine,
            attack=attack,
            rounds=rounds,
            partition=partition,
            operator_key=dev_private_key(0),
            log=typer.echo,
            report_path=report,
        )
    except SimulationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"report written to {report}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("simulate")(simulate_command)
