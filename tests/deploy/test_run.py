"""`fedledger run` (what `make run` starts) brings everything up, simulates, and stops it all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fedledger.chain.devnode import free_port, port_is_free

pytestmark = [pytest.mark.slow, pytest.mark.chain]


def test_run_simulates_then_stops_every_process_on_ctrl_c(tmp_path: Path) -> None:
    api_port, chain_port, dashboard_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")} | {
        "FEDLEDGER_DATA_DIR": str(tmp_path / "var"),
        "FEDLEDGER_API_PORT": str(api_port),
        "FEDLEDGER_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "FEDLEDGER_SIWE_DOMAIN": f"127.0.0.1:{api_port}",
        "FEDLEDGER_CHAIN_RPC_URL": f"http://127.0.0.1:{chain_port}",
        "FEDLEDGER_DASHBOARD_PORT": str(dashboard_port),
        "FEDLEDGER_API_URL": f"http://127.0.0.1:{api_port}",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "run",
                "--orgs",
                "4",
                "--byzantine",
                "1",
                "--rounds",
                "2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 420
        while "Ctrl-C stops everything" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        text = log.read_text()
        assert len(processes_with(f"FEDLEDGER_DATA_DIR={tmp_path}")) >= 4  # run, api, worker, dashboard
        assert text.count(": POSTED, fltrust_guarded") == 2, text
        assert httpx.get(f"http://127.0.0.1:{api_port}/readyz").json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{dashboard_port}/_stcore/health").status_code == 200
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    for port in (api_port, chain_port, dashboard_port):
        assert port_is_free("127.0.0.1", port), f"port {port} still taken after Ctrl-C"
    assert processes_with(f"FEDLEDGER_DATA_DIR={tmp_path}") == [], "processes left behind after Ctrl-C"
    # A clean stop is clean in the logs too: the worker stops its own pool (no "ForkPoolWorker-N exited
    # with signal 15" ERROR), and no process logs an error on the way out.
    logs = tmp_path / "var" / "run" / "logs"
    for name in ("api", "worker", "dashboard"):
        errors = [line for line in (logs / f"{name}.log").read_text().splitlines() if "ERROR" in line]
        assert not errors, f"{name}.log: {errors}"


def processes_with(marker: str) -> list[int]:
    """PIDs with an environment entry starting with ``marker``: every process `fedledger run` started has
    its data directory (the run's own, or the run/ directory under it) in FEDLEDGER_DATA_DIR."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(
                    item.startswith(marker.encode()) for item in (entry / "environ").read_bytes().split(b"\0")
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
