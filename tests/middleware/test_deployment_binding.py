"""A database remembers the chain deployment it was written for: the API refuses to start against other
contracts (a PostgreSQL volume kept while an in-memory dev chain was restarted), and says how to fix it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import DeploymentBinding
from db.session import session_factory
from fedledger.chain.devnode import DevChain, free_port
from fedledger.config import Settings
from fedledger.domain.deployment import DeploymentMismatch
from middleware import app as app_module
from middleware.app import create_app
from tests.middleware.conftest import OPERATOR, address_of, login

OPERATOR_ADDRESS = address_of(OPERATOR)

pytestmark = pytest.mark.chain


def start(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200


def test_the_api_refuses_a_database_of_another_deployment(
    tmp_path: Path, deployments_file: Path, dev_chain
) -> None:  # type: ignore[no-untyped-def]
    database = f"sqlite:///{tmp_path / 'api.db'}"
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database,
        deployments_file=deployments_file,
        chain_rpc_url=dev_chain[0].rpc_url,
    )
    start(settings)
    start(settings)  # the same deployment again: fine
    with session_factory(database)() as session:
        (bound,) = session.scalars(select(DeploymentBinding)).all()
    raw = json.loads(deployments_file.read_text())
    assert bound.chain_id == raw["chainId"] == 31337
    assert bound.ledger_address == raw["contracts"]["ContributionLedger"]["address"]
    assert bound.deploy_block == raw["deployBlock"]

    # The chain restarted and the contracts were deployed anew (another ledger address): refused.
    raw["contracts"]["ContributionLedger"]["address"] = "0x" + "ab" * 20
    other = tmp_path / "redeployed.json"
    other.write_text(json.dumps(raw))
    with pytest.raises(DeploymentMismatch) as refused:
        start(settings.model_copy(update={"deployments_file": other}))
    assert "this database belongs to the deployment on chain 31337" in str(refused.value)
    assert "docker compose down -v" in str(refused.value)
    # Nothing was rewritten: the original deployment still starts.
    start(settings)


@pytest.fixture(scope="module")
def redeployed_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevChain, Path]]:
    """What a restarted dev node looks like after the same deploy: a second node, deployed by the same
    account, so the same chain id and contract addresses (and deploy block number) on another chain."""
    workdir = tmp_path_factory.mktemp("redeployed")
    node = DevChain(port=free_port(), log_path=workdir / "node.log")
    node.start()
    try:
        node.deploy(workdir / "deployments.json")
        yield node, workdir / "deployments.json"
    finally:
        node.stop()


def test_a_redeployed_chain_with_the_same_addresses_is_refused(
    tmp_path: Path, deployments_file: Path, dev_chain, redeployed_chain: tuple[DevChain, Path]
) -> None:  # type: ignore[no-untyped-def]
    node, redeployed_file = redeployed_chain
    original = json.loads(deployments_file.read_text())
    redeployed = json.loads(redeployed_file.read_text())
    # The attack's premise: nothing in the deployments file tells the two apart.
    assert redeployed["chainId"] == original["chainId"]
    assert redeployed["deployBlock"] == original["deployBlock"]
    assert {n: c["address"] for n, c in redeployed["contracts"].items()} == {
        n: c["address"] for n, c in original["contracts"].items()
    }
    database = f"sqlite:///{tmp_path / 'api.db'}"
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database,
        deployments_file=deployments_file,
        chain_rpc_url=dev_chain[0].rpc_url,
    )
    start(settings)
    with session_factory(database)() as session:
        (bound,) = session.scalars(select(DeploymentBinding)).all()
    assert bound.genesis_hash and bound.deploy_block_hash
    other = settings.model_copy(update={"deployments_file": redeployed_file, "chain_rpc_url": node.rpc_url})
    with pytest.raises(DeploymentMismatch, match="another chain with the same id and contract addresses"):
        start(other)
    start(settings)  # the original chain still starts


def test_a_node_that_comes_up_redeployed_after_the_start_is_refused_on_first_use(
    tmp_path: Path,
    deployments_file: Path,
    dev_chain,
    redeployed_chain: tuple[DevChain, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    node, redeployed_file = redeployed_chain
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        deployments_file=deployments_file,
        chain_rpc_url=dev_chain[0].rpc_url,
        operator_addresses=[OPERATOR_ADDRESS],
        siwe_domain="testserver",
        public_url="http://testserver",
    )
    start(settings)
    # The node is down while the API starts (so start-up can compare the file only), and what answers later
    # is the redeployed chain: the first chain read compares the hashes.
    monkeypatch.setattr(app_module, "node_identity", lambda *_: None)
    other = settings.model_copy(update={"deployments_file": redeployed_file, "chain_rpc_url": node.rpc_url})
    with TestClient(create_app(other)) as client:
        operator = login(client, OPERATOR)
        verify = client.get("/v1/audit/verify", headers=operator)
        assert verify.status_code == 503, verify.text
        assert verify.json()["error"] == "deployment_mismatch"
        assert client.get("/v1/chain/deployments").status_code == 503
