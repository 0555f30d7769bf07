"""Issue 21.12, least privilege for the Flower server: its login (FEDLEDGER_ROUND_RUNNER_ADDRESSES) opens and
closes rounds and nothing else. The attack: the Flower server held an operator login, so whoever took its key
could also roll models back, rotate the server's keys and read the audit log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fedledger.config import Settings
from fedledger.domain.tasks import CeleryTaskQueue
from fedledger.payload import encode_weights
from middleware.app import create_app
from tests.middleware.conftest import MODEL, OPERATOR, address_of, login

pytestmark = [pytest.mark.chain, pytest.mark.redis]

RUNNER = 15


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    runner = settings.model_copy(update={"round_runner_addresses": [address_of(RUNNER)]})
    with TestClient(create_app(runner, queue=CeleryTaskQueue(runner.resolved_broker_url))) as client:
        yield client


def test_the_round_runner_opens_and_closes_rounds_and_nothing_else(api: TestClient) -> None:
    operator = login(api, OPERATOR)
    genesis = api.post("/v1/models", content=encode_weights(MODEL), headers=operator)
    assert genesis.status_code == 201, genesis.text
    runner = login(api, RUNNER)

    opened = api.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=runner)
    assert opened.status_code == 201, opened.text
    closed = api.post(f"/v1/rounds/{opened.json()['id']}/close", headers=runner)
    assert closed.status_code == 200, closed.text

    for method, path in (
        ("POST", f"/v1/models/{genesis.json()['version']}/rollback"),
        ("POST", "/v1/keys/rotate"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit/verify"),
    ):
        refused = api.request(method, path, headers=runner)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"] == "operator_only", (path, refused.text)
    refused = api.post("/v1/models", content=encode_weights(MODEL), headers=runner)
    assert refused.status_code == 403, refused.text
    # An organization's login is neither.
    org = api.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=login(api, 3))
    assert org.status_code == 403 and org.json()["error"] == "round_runner_only", org.text
