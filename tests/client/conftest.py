"""Fixtures of the client tests: the real API of tests/middleware (SQLite and PostgreSQL, Redis, the
session's Hardhat node) and organizations built with the SDK against it.

Dev accounts used here: 10..14 are this suite's organizations (chain state lives for the whole session,
so every test tolerates an organization that an earlier test already enrolled); 16 is the operator and
17 the never-enrolled account of tests/middleware (read, never enrolled here).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web3 import Web3

from client.data import Dataset, load_digits_dataset, partition_iid
from client.sdk import Organization
from client.training import SoftmaxRegression
from client.wallet import Wallet
from fedledger.chain.deployments import Deployments
from fedledger.devkeys import dev_private_key
from fedledger.payload import encode_weights
from tests.chain.ledger import next_round_id
from tests.middleware.conftest import (  # noqa: F401 - fixtures and helpers re-exported for this suite
    OPERATOR,
    address_of,
    client,
    database_url,
    login,
    settings,
)

CLIENT_ORGS = (10, 11, 12, 13, 14)
NEVER_ENROLLED = 17
FEATURES, CLASSES = 64, 10
_round_ids = random.Random()


def unique_round_id(w3: Web3, deployments: Deployments) -> int:
    """A round id the shared session chain's ledger accepts next (it records ids in increasing order only);
    hundreds above the database's own ids so that a row inserted with it cannot collide (the ledger refuses
    a step above its maximal round gap, 1024 by default)."""
    return next_round_id(w3, deployments, gap=_round_ids.randrange(512, 1024))


@pytest.fixture(scope="session")
def digits_parts() -> list[Dataset]:
    return partition_iid(load_digits_dataset("train"), len(CLIENT_ORGS), seed=7)


@pytest.fixture
def operator(client: TestClient) -> dict[str, str]:  # noqa: F811
    return login(client, OPERATOR)


@pytest.fixture
def genesis(client: TestClient, operator: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    """A softmax genesis model for the digits (64 features, 10 classes)."""
    weights = SoftmaxRegression(FEATURES, CLASSES).init_weights()
    response = client.post("/v1/models", content=encode_weights(weights), headers=operator)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def open_round(client: TestClient, operator: dict[str, str], genesis: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    response = client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def make_org(client: TestClient, w3: Web3, deployments: Deployments) -> Iterator[Callable[..., Organization]]:  # noqa: F811
    """``make_org(index, **options)``: an Organization for dev account ``index``, talking to the test API
    through its TestClient and to the session chain. Deployments come from the API, as in production."""
    made: list[Organization] = []

    def make(index: int, **options: Any) -> Organization:
        options.setdefault("poll_interval", 0.05)
        org = Organization(Wallet(dev_private_key(index)), http=client, w3=w3, **options)
        made.append(org)
        return org

    yield make
    for org in made:
        org.close()
