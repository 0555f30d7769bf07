"""Shared fixtures: one real Hardhat node per test session, deployed with the project's own deploy script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port


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
def w3(dev_chain: tuple[DevChain, Deployments]) -> Web3:
    return Web3(Web3.HTTPProvider(dev_chain[0].rpc_url))


@pytest.fixture(scope="session")
def deployments(dev_chain: tuple[DevChain, Deployments]) -> Deployments:
    return dev_chain[1]


@pytest.fixture(scope="session")
def deployments_file(dev_chain: tuple[DevChain, Deployments]) -> Path:
    """Where the session's deploy wrote its deployments file (next to the node's log)."""
    return dev_chain[0].log_path.parent / "deployments.json"
