"""Starting and stopping the platform's processes together (``fedledger run``).

Each child runs in its own process group and is stopped with SIGTERM, then SIGKILL, group and all, so
Ctrl-C leaves no orphan (uvicorn workers, Celery's pool, Hardhat's node children) and frees every port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class LaunchError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    log_dir: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str, cwd: Path | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                env=self.env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def wait_http(self, child: Child, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise LaunchError(
                    f"{child.name} exited with code {child.process.returncode}; see {child.log}"
                )
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise LaunchError(f"{child.name} did not answer on {url} within {timeout:.0f} s; see {child.log}")

    def check(self) -> None:
        for child in self.children:
            if child.process.poll() is not None:
                raise LaunchError(
                    f"{child.name} exited with code {child.process.returncode}; see {child.log}"
                )

    def stop_all(self, grace: float = 20.0) -> None:
        """SIGTERM each child's leader, then whatever is left of its group, then SIGKILL.

        The leader first, alone: a Celery worker stops its own pool (a pool process killed under it is
        logged as an ERROR), uvicorn and Streamlit finish their requests. The group afterwards, so nothing
        the child started outlives it.
        """
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=10)
            # Stragglers of an exited leader (a pool process still finishing) go with the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
        self.children.clear()
