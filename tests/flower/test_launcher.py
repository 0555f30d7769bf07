"""The example's launcher (examples/flower/run.py) fails fast instead of hanging when its federation breaks."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest


def test_ports_handed_out_together_are_distinct(launcher: ModuleType) -> None:
    # One SuperLink's three APIs and a SuperNode's ClientAppIo API each: a port given twice kills a node.
    ports = launcher.free_ports(64)
    assert len(set(ports)) == 64


def test_a_supernode_that_dies_ends_the_run_at_once(launcher: ModuleType, tmp_path: Path) -> None:
    """A SuperNode gone (e.g. its port taken by another process) leaves the ServerApp waiting for it: the
    launcher stops the run at once rather than after its timeout."""
    with launcher.federation(launcher.node_configs(2, 0, "signflip"), tmp_path) as fed:
        dead = fed.processes[-1]
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="flower-supernode exited with -9 during the run"):
            fed.run({"num-server-rounds": 1, "num-nodes": 2, "strategy": "median"}, timeout=600)
        assert time.monotonic() - started < 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its exit status (reaped by init once orphaned).
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def test_stop_ends_what_a_finished_leader_left_in_its_group(launcher: ModuleType, tmp_path: Path) -> None:
    """A SuperLink that has exited can leave its ServerApp processes behind in its process group: stop()
    ends them too (an orphaned flwr-serverapp outlived a test run this way)."""
    fed = launcher.Federation(workdir=tmp_path, nodes=[])
    child = tmp_path / "child.pid"
    # The leader starts a child that ignores SIGTERM, as a slow-to-stop ServerApp would, and exits.
    fed._spawn("leader", ["bash", "-c", f"(trap '' TERM; exec sleep 300) & echo $! > {child}; exit 0"])
    leader = fed.processes[0]
    leader.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not (child.exists() and child.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(child.read_text())
    assert _alive(pid), "the leader's child should still be running"
    fed.stop()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
