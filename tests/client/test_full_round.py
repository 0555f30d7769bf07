"""A whole round: three organizations submit with the SDK, the real aggregator (in-process) closes and
posts the round, the organizations verify the new model against the chain and claim their rewards with
the API's proofs.

SQLite only (the API's database behaviour is covered on both engines by the other tests): the same three
organizations take part every time, and the session chain remembers earlier runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from web3 import Web3

from aggregator.worker.close import Signing, close_round
from aggregator.worker.gateway import ChainGateway
from aggregator.worker.posting import post_round
from client.data import Dataset
from db.models import Round, RoundStatus
from fedledger.chain.deployments import Deployments
from fedledger.config import Settings
from fedledger.datasets import load_holdout
from tests.client.conftest import CLIENT_ORGS, unique_round_id

pytestmark = [pytest.mark.chain, pytest.mark.redis]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'api.db'}"


def test_a_full_round_through_the_aggregator(
    make_org,
    client: TestClient,
    settings: Settings,
    operator: dict[str, str],
    w3: Web3,
    deployments: Deployments,  # type: ignore[no-untyped-def]
    genesis: dict[str, Any],
    digits_parts: list[Dataset],
) -> None:
    response = client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator)
    assert response.status_code == 201, response.text
    round_id = unique_round_id(
        w3, deployments
    )  # the ledger records ids in order; the session chain is shared
    state = client.app.state.fl
    with state.sessions.begin() as session:
        session.execute(update(Round).where(Round.id == response.json()["id"]).values(id=round_id))

    orgs = [make_org(index, trainer_options={"epochs": 5}) for index in CLIENT_ORGS[2:5]]
    submissions = []
    for i, org in enumerate(orgs):
        org.setup()
        submissions.append(org.participate(digits_parts[2 + i], seed=i))
    assert {s.round_id for s in submissions} == {round_id}

    result = close_round(
        state.sessions,
        state.blobs,
        settings.resolved_key_dir,
        round_id,
        "client-tests",
        60,
        load_holdout("digits"),
        Signing(
            settings.resolved_model_signer_key,
            deployments.chain_id,
            deployments.addresses["ContributionLedger"],
        ),
    )
    assert result == RoundStatus.aggregated.value, result
    gateway = ChainGateway(
        settings.chain_rpc_url, deployments, settings.resolved_aggregator_key, state.sessions
    )
    assert post_round(state.sessions, gateway, round_id) == "posted"

    final = orgs[0].wait_for_round(round_id, timeout=5)
    assert final.status == "POSTED"
    model = orgs[0].pull_model()
    assert (
        model.produced_by_round == round_id and model.onchain_verified and model.version > genesis["version"]
    )
    registry = deployments.contract(w3, "ParticipantRegistry")
    token = deployments.contract(w3, "RewardToken")
    paid_total = 0
    for org in orgs:
        assert registry.functions.isActive(org.address).call()  # honest organizations are not slashed
        rewards = [r for r in org.rewards() if r.round_id == round_id]
        before = token.functions.balanceOf(org.address).call()
        claimed = org.claim_rewards({round_id})
        paid = sum(r.amount_wei for r in rewards)
        assert [c.status for c in claimed] == ["claimed"] * len(rewards)
        assert token.functions.balanceOf(org.address).call() - before == paid
        assert all(r.claimed for r in org.rewards() if r.round_id == round_id)
        assert [c.status for c in org.claim_rewards({round_id})] == ["already_claimed"] * len(rewards)
        paid_total += paid
    assert paid_total > 0  # the round paid its organizations
    assert np.isfinite(model.weights["dense.weight"]).all()
