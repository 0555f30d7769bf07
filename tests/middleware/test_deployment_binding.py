"""A database remembers the chain deployment it was written for: the API refuses to start against other
contracts (a PostgreSQL volume kept while an in-memory dev chain was restarted), and says how to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import DeploymentBinding
from db.session import session_factory
from fedledger.config import Settings
from fedledger.domain.deployment import DeploymentMismatch
from middleware.app import create_app

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
