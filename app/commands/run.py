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
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX


def printed_wallet_index() -> int:
    """The dev wallet `fedledger run` prints for MetaMask: the first simulated organization (honest), whose
    rewards the simulation leaves unclaimed and to which spare dev accounts delegate their votes."""
    return FIRST_ORGANIZATION_INDEX


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
    from web3 import Web3

    from app import devgov
    from app.launcher import LaunchError, Supervisor
    from app.simulation import simulate
    from fedledger.chain.devnode import DevChain
    from fedledger.devkeys import dev_private_key

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
    wallet_index = printed_wallet_index()
    wallet = Account.from_key(dev_private_key(wallet_index)).address
    started = time.monotonic()
    try:
        step(f"starting the dev chain on {node.rpc_url}")
        node.start()
        step("deploying the contracts (short governance timings: dev chain only)")
        deployments = node.deploy(run_dir / "deployments.json", env=devgov.DEV_TIMINGS)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        gov = devgov.prepare(
            w3, deployments, wallet_index, devgov.donor_indices(FIRST_ORGANIZATION_INDEX + orgs)
        )
        dashboard_host = f"{settings.dashboard_host}:{settings.dashboard_port}"
        env = dict(
            os.environ,
            FEDLEDGER_DATA_DIR=str(run_dir),
            FEDLEDGER_DEPLOYMENTS_FILE=str(run_dir / "deployments.json"),
            FEDLEDGER_CHAIN_RPC_URL=node.rpc_url,
            FEDLEDGER_OPERATOR_ADDRESSES=operator,
            FEDLEDGER_TICK_SECONDS="2",
            # Sign-in messages name the dashboard's origin as people open it (also on a non-default port).
            FEDLEDGER_SIWE_ALLOWED_DOMAINS=",".join(
                dict.fromkeys([*settings.siwe_allowed_domains, dashboard_host, *_aliases(dashboard_host)])
            ),
        )
        supervisor = Supervisor(logs, env)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        step(f"starting the API on {api_url}")
        api = supervisor.start("api", "api")
        supervisor.wait_http(api, f"{api_url}/healthz")
        step("starting the aggregation worker")
        supervisor.start("worker", "worker")
        dashboard_url = f"http://{dashboard_host}"
        if dashboard:
            step(f"starting the dashboard on {dashboard_url}")
            supervisor.start("dashboard", "dashboard")
        typer.echo(f"   logs in {logs}")
        report_path = run_dir / "simulation-report.json"
        if rounds > 0:
            step(f"simulating {orgs} organizations ({byzantine} {attack}) for {rounds} rounds")

            def checked_sleep(seconds: float) -> None:
                # Between the simulation's steps: fail fast if a service died rather than wait on it.
                supervisor.check()
                time.sleep(seconds)

            simulate(
                api_url,
                node.rpc_url,
                orgs=orgs,
                byzantine=byzantine,
                attack=attack,
                rounds=rounds,
                operator_key=dev_private_key(0),
                log=typer.echo,
                report_path=report_path,
                sleep=checked_sleep,
                leave_unclaimed={wallet},
                progress=True,
            )
        unclaimed = _unclaimed_rewards(w3, deployments, api_url, wallet_index)
        # Now, after the simulation's stakes and rewards (the quorum grows with the supply).
        votes = deployments.contract(w3, "RewardToken").functions.getVotes(wallet).call()
        quorum = deployments.contract(w3, "FLGovernor").functions.quorum(w3.eth.block_number - 1).call()
        delay, period, timelock = (deployments.governance.get(k, 0) for k in _GOV_KEYS)
        minutes = gov.minutes_to_execute(delay, period, timelock)
        typer.echo("")
        typer.echo(f"ready in {time.monotonic() - started:.0f} s")
        typer.echo(f"dashboard  {dashboard_url}" if dashboard else "dashboard  (not started)")
        typer.echo(f"API        {api_url}/docs")
        typer.echo(f"chain      {node.rpc_url}  chain id {deployments.chain_id}")
        if rounds > 0:
            typer.echo(f"report     {report_path}")
        typer.echo("")
        typer.echo("Dev wallet for MetaMask (dev chain only; the key is public):")
        typer.echo(f"  address      {wallet}")
        typer.echo(f"  private key  {dev_private_key(wallet_index)}")
        typer.echo(
            f"  {unclaimed} reward(s) waiting to be claimed; voting power "
            f"{votes // 10**18:,} against a quorum of {quorum // 10**18:,} tokens"
        )
        typer.echo("")
        typer.echo("Next steps:")
        typer.echo(
            f"  1. MetaMask: add the network {node.rpc_url} (chain id {deployments.chain_id}, currency ETH) "
            "and import the key above."
        )
        typer.echo(f"  2. Open {dashboard_url}, Connect wallet, sign in; claim on Token economics.")
        typer.echo(
            f"  3. Governance: propose a change and vote For; a block is mined every {gov.block_seconds:g} s, "
            f"so propose → executed takes about {minutes:.1f} min (queue and execute from the same page)."
        )
        typer.echo(
            "  4. Operator CLI: `.venv/bin/fedledger rounds open`, `rounds list`; organizations: "
            "`.venv/bin/fedledger client --help`."
        )
        typer.echo("Ctrl-C stops everything.")
        while True:
            supervisor.check()
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping ...")
    except (LaunchError, devgov.DevGovernanceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        node.stop()


_GOV_KEYS = ("votingDelay", "votingPeriod", "timelockDelay")


def step(text: str) -> None:
    """One line per start-up step, as it begins, so a long step is never silent."""
    typer.echo(f"-> {text} ...")


def _aliases(host: str) -> list[str]:
    """The other names of a loopback host:port (people type localhost as often as 127.0.0.1)."""
    name, _, port = host.rpartition(":")
    loopback = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}
    return [f"{loopback[name]}:{port}"] if name in loopback else []


def _unclaimed_rewards(w3: object, deployments: object, api_url: str, wallet_index: int) -> int:
    """How many of the wallet's served rewards are not claimed on-chain yet (0 when the API has none).

    The API serves an address's rewards to its own token only: the wallet signs in (dev key, dev chain)."""
    from client.wallet import Wallet
    from fedledger.api.client import FedLedgerApi
    from fedledger.api.errors import ClientError
    from fedledger.devkeys import dev_private_key

    wallet = Wallet(dev_private_key(wallet_index))
    try:
        with FedLedgerApi(api_url, wallet=wallet, timeout=10) as api:
            served = api.rewards(wallet.address)
    except ClientError:
        return 0
    distributor = deployments.contract(w3, "RewardDistributor")  # type: ignore[attr-defined]
    return sum(
        1
        for item in served
        if int(item.amount_wei) > 0
        and not distributor.functions.claimed(item.round_id, wallet.address).call()
    )


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
    model_signer: Annotated[
        str | None,
        typer.Option(
            help="Address the server signs models with (default: from FEDLEDGER_MODEL_SIGNER_PRIVATE_KEY; "
            "the dev account only on the dev chain)."
        ),
    ] = None,
) -> None:
    """Run simulated organizations through a running stack (API, worker, dev chain)."""
    from app.simulation import SimulationError, simulate
    from fedledger.config import InsecureConfiguration
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
            model_signer=model_signer,
            progress=True,
        )
    except (SimulationError, InsecureConfiguration) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"report written to {report}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("simulate")(simulate_command)
