"""Shared fixtures: one real Hardhat node per test session, deployed with the project's own deploy script; and
which tests pytest-xdist workers may run side by side (`make test` runs `pytest -n 2`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from tests.databases import MigratedDatabases

ROOT = Path(__file__).resolve().parents[1]

# Test modules that use no shared service: no Redis, PostgreSQL or session Hardhat node, no file outside their
# tmp_path; the processes they start (a Hardhat node of their own, a Flower federation) listen on free ports
# only. Each passes in a network namespace of its own, where the machine's Redis and PostgreSQL are out of
# reach (`unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest <modules>'`).
ISOLATED = (
    "tests/aggregator/",
    "tests/crypto/",
    "tests/secagg/",
    "tests/test_evidence.py",
    "tests/test_layering.py",
    "tests/test_models.py",
    "tests/test_payload.py",
    "tests/client/test_api_retries.py",
    "tests/client/test_data_and_wallet.py",
    "tests/client/test_status_format.py",
    "tests/client/test_training.py",
    "tests/deploy/test_devgov.py",
    "tests/domain/test_server_data.py",
    "tests/flower/test_federation.py",
    "tests/flower/test_launcher.py",
    "tests/flower/test_legacy.py",
    "tests/flower/test_reply_signature.py",
    "tests/flower/test_strategy.py",
)


# Tests of shared services that share nothing with the others: their own Hardhat node and Redis server
# (tests/worker/conftest.py) and PostgreSQL schemas of their own. They are a unit of their own, which runs
# beside the other tests of shared services.
WORKER_PLATFORM = ("tests/worker/", "tests/flower/test_platform.py")
SHARED_UNITS = ("services", "worker platform")


def work_unit(nodeid: str) -> str:
    """What one pytest-xdist worker runs as a whole: an isolated module, the worker platform's tests, or every
    other test together."""
    module = nodeid.split("::", 1)[0]
    if module.startswith(ISOLATED):
        return module
    return "worker platform" if module.startswith(WORKER_PLATFORM) else "services"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `pytest -n N` (`make test`), the tests of shared services run in one worker, in the usual order:
    no two of them ever share a Redis database or a chain at once, and those that rely on the session's chain
    state (e.g. an organization slashed earlier) still see it. The worker platform's tests, in order too, run
    in another worker at the same time. The isolated modules are units any worker takes, largest first."""
    from xdist.scheduler import LoadScopeScheduling

    class ServicesInOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # The two units of shared services first, so that they start at once on two workers: by size
            # alone the worker platform's few (long) tests would come after bigger isolated modules, and
            # often to the worker that runs "services", after it.
            for unit in reversed(SHARED_UNITS):
                if unit in self.workqueue:
                    self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return ServicesInOneWorker(config, log)


@pytest.fixture(scope="session")
def dev_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevChain, Deployments]]:
    workdir: Path = tmp_path_factory.mktemp("chain")
    node = DevChain(port=free_port(), log_path=workdir / "node.log")
    node.start()
    try:
        yield node, node.deploy(workdir / "deployments.json")
    finally:
        node.stop()


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedDatabases]:
    """Copies of databases migrated once per session (tests/databases.py), for the tests that start the API."""
    databases = MigratedDatabases(tmp_path_factory.mktemp("migrated"))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def w3(dev_chain: tuple[DevChain, Deployments]) -> Web3:
    return Web3(Web3.HTTPProvider(dev_chain[0].rpc_url))


@pytest.fixture(scope="session")
def deployments(dev_chain: tuple[DevChain, Deployments]) -> Deployments:
    return dev_chain[1]


@pytest.fixture(scope="session")
def deployments_file(dev_chain: tuple[DevChain, Deployments]) -> Path:
    """Where the session's deploy wrote its deployments file (next to the node's log)."""
    return dev_chain[0].log_path.parent / "deployments.json"
