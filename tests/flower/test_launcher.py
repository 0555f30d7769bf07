"""The example's launcher (examples/flower/run.py) fails fast instead of hanging when its federation breaks."""

from __future__ import annotations

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
