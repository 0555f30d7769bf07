"""An organization learns why its update was left out of a round (and so not paid): the SDK's round result,
``status`` and the CLI's lines for both, against the API, the session chain and the real aggregator's close.

SQLite only, as tests/client/test_full_round.py (the API's database behaviour is covered elsewhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, update
from web3 import Web3

from aggregator.worker.close import Signing, close_round
from aggregator.worker.gateway import ChainGateway
from aggregator.worker.posting import post_round
from app.commands.client import _outcome, _print_submission
from client.data import Dataset
from client.participation import Submission
from db.models import Participant, Round, RoundStatus
from fedledger.chain.deployments import Deployments
from fedledger.config import Settings
from fedledger.datasets import load_holdout
from tests.client.conftest import CLIENT_ORGS, unique_round_id

pytestmark = [pytest.mark.chain, pytest.mark.redis]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'api.db'}"


def test_an_excluded_update_shows_its_reason_to_its_organization(
    make_org,
    client: TestClient,
    settings: Settings,
    operator: dict[str, str],
    w3: Web3,
    deployments: Deployments,  # type: ignore[no-untyped-def]
    genesis: dict[str, Any],
    digits_parts: list[Dataset],
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator)
    assert response.status_code == 201, response.text
    round_id = unique_round_id(w3, deployments)
    state = client.app.state.fl
    with state.sessions.begin() as session:
        session.execute(update(Round).where(Round.id == response.json()["id"]).values(id=round_id))
    orgs = [make_org(index, trainer_options={"epochs": 2}) for index in CLIENT_ORGS[1:5]]
    for org in orgs:
        org.setup()
    low = orgs[3]
    # Below the governed min_reputation (10): scored, but the aggregate leaves it out and it is not paid.
    with state.sessions.begin() as session:
        session.execute(
            update(Participant)
            .where(func.lower(Participant.address) == low.address.lower())
            .values(reputation=5.0)
        )
    for i, org in enumerate(orgs[:3]):
        org.participate(digits_parts[1 + i], seed=i)
    waited: list[Submission] = []
    waiting = threading.Thread(
        target=lambda: waited.append(low.participate(digits_parts[4], seed=3, wait=True, timeout=300))
    )
    waiting.start()
    deadline = time.monotonic() + 300
    while client.get(f"/v1/rounds/{round_id}").json()["submissions"] < 4:
        assert waiting.is_alive() and time.monotonic() < deadline, "the fourth update never arrived"
        time.sleep(0.1)

    holdout = load_holdout("digits")
    signing = Signing(
        settings.resolved_model_signer_key, deployments.chain_id, deployments.addresses["ContributionLedger"]
    )
    result = close_round(
        state.sessions, state.blobs, settings.resolved_key_dir, round_id, "client-tests", 60, holdout, signing
    )
    assert result == RoundStatus.aggregated.value, result
    gateway = ChainGateway(
        settings.chain_rpc_url, deployments, settings.resolved_aggregator_key, state.sessions
    )
    assert post_round(state.sessions, gateway, round_id) == "posted"
    waiting.join(timeout=300)
    assert waited, "participate(wait=True) did not return"

    summary = waited[0].summary()
    assert summary["round_status"] == "POSTED" and summary["kept"] is False
    assert summary["excluded_reason"].startswith("reputation 5.0 is below the governed min_reputation 10")
    assert int(summary["reward_wei"]) == 0
    status = low.status()
    assert status["round"]["id"] == round_id
    assert status["round_result"]["excluded_reason"] == summary["excluded_reason"]
    kept = orgs[0].status()["round_result"]
    assert kept["kept"] is True and kept["excluded_reason"] is None and int(kept["reward_wei"]) > 0

    # What the CLI prints: train-and-submit --wait, and status's line for the round it shows.
    _print_submission(summary)
    printed = capsys.readouterr().out
    assert f"excluded from the aggregate (not paid): {summary['excluded_reason']}" in printed
    assert _outcome(status["round_result"]) == f"excluded: {summary['excluded_reason']} (not paid)"
    assert _outcome(orgs[0].status()["round_result"]).startswith("kept: fitness ")
