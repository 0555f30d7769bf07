"""``fedledger dashboard``: the Streamlit dashboard (``visualization/app.py``), headless, on the settings' address."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from fedledger.config import PROJECT_ROOT, Settings, get_settings

APP = PROJECT_ROOT / "visualization" / "app.py"


def streamlit_command(settings: Settings, host: str | None = None, port: int | None = None) -> list[str]:
    """The ``streamlit run`` command line for the dashboard (headless, no usage statistics, no file watcher)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        host or settings.dashboard_host,
        "--server.port",
        str(port or settings.dashboard_port),
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: FEDLEDGER_DASHBOARD_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: FEDLEDGER_DASHBOARD_PORT).")] = None,
) -> None:
    """Run the dashboard (Streamlit) in the foreground. It reads FEDLEDGER_API_URL and FEDLEDGER_CHAIN_RPC_URL."""
    settings = get_settings()
    command = streamlit_command(settings, host, port)
    typer.echo(
        f"dashboard on http://{host or settings.dashboard_host}:{port or settings.dashboard_port} "
        f"(API {settings.api_url}, chain {settings.chain_rpc_url})"
    )
    # The project root on the path, so the app imports its modules from a checkout without reinstalling.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    sys.stdout.flush()
    # Replace this process: Ctrl-C and SIGTERM reach Streamlit directly, and no child is left behind.
    os.execve(sys.executable, command, env)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
