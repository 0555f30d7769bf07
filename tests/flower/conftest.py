"""Fixtures of the Flower tests: the example's launcher (real SuperLink, SuperNodes and `flwr run`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

# Before Flower is imported (it reads these at import): no telemetry upload, no PyPI update check.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

pytest.importorskip("flwr", reason="the Flower tests need the flower extra (make test installs it)")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"


@pytest.fixture(scope="session")
def launcher() -> ModuleType:
    """examples/flower/run.py as a module (the same code the README's command runs)."""
    spec = importlib.util.spec_from_file_location("fedledger_flower_run", EXAMPLE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
