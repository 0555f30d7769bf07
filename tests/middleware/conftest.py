"""A real API per test on SQLite and on PostgreSQL, with real Redis and the session's Hardhat node."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from eth_account import Account
from fastapi.testclient import TestClient
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.chain.tx import send_transaction
from fedledger.config import Settings
from fedledger.crypto.eip712 import sign_update
from fedledger.crypto.envelope import seal
from fedledger.devkeys import dev_private_key
from fedledger.domain import submissions
from fedledger.domain.tasks import CeleryTaskQueue
from fedledger.payload import encode_update, encode_weights
from middleware.app import create_app
from tests.databases import MigratedDatabases
from tests.services import redis_url

REDIS_RATE_DB = redis_url(15)
REDIS_BROKER_DB = redis_url(14)

# Dev accounts with fixed jobs in these tests (chain state lives for the whole session).
OPERATOR = 16
NEVER_ENROLLED = 17
SLASHED = 18
ORGS = (3, 4, 5, 6, 7)

MODEL = {"dense.weight": np.zeros((16, 4), np.float32), "dense.bias": np.zeros(4, np.float32)}


def address_of(index: int) -> str:
    return Account.from_key(dev_private_key(index)).address


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_databases: MigratedDatabases
) -> Iterator[str]:
    """A migrated database of the test's own: a copy, not a migration (tests/databases.py)."""
    if request.param == "sqlite":
        yield migrated_databases.sqlite_url(tmp_path / "api.db")
        return
    with migrated_databases.postgres_url() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dev_chain, deployments_file: Path) -> Settings:
    redis.Redis.from_url(REDIS_RATE_DB).flushdb()
    redis.Redis.from_url(REDIS_BROKER_DB).flushdb()
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        redis_url=REDIS_RATE_DB,
        redis_namespace=f"test-{uuid.uuid4().hex[:8]}",
        broker_url=REDIS_BROKER_DB,
        chain_rpc_url=dev_chain[0].rpc_url,
        deployments_file=deployments_file,
        siwe_domain="testserver",
        public_url="http://testserver",
        operator_addresses=[address_of(OPERATOR)],
        max_update_bytes=256 * 1024,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, queue=CeleryTaskQueue(settings.resolved_broker_url))
    with TestClient(app) as test_client:
        yield test_client


def room_in_rate_window(seconds: float, window_seconds: int = 60) -> None:
    """Wait for the next fixed rate-limit window if fewer than ``seconds`` are left in this one, so that the
    requests a test counts all fall in one window (counts restart when it turns)."""
    left = window_seconds - time.time() % window_seconds
    if left < seconds:
        time.sleep(left + 0.05)


def login(client: TestClient, index: int) -> dict[str, str]:
    key = dev_private_key(index)
    address = Account.from_key(key).address
    challenge = client.post("/v1/auth/nonce", json={"address": address}).json()
    signature = Account.sign_message(_eip191(challenge["message"]), key).signature.to_0x_hex()
    response = client.post("/v1/auth/login", json={"message": challenge["message"], "signature": signature})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _eip191(message: str):  # type: ignore[no-untyped-def]
    from eth_account.messages import encode_defunct

    return encode_defunct(text=message)


def ensure_enrolled(w3: Web3, deployments: Deployments, index: int) -> None:
    key = dev_private_key(index)
    address = Account.from_key(key).address
    registry = deployments.contract(w3, "ParticipantRegistry")
    if (
        registry.functions.isActive(address).call()
        or registry.functions.participantOf(address).call()[-1] != 0
    ):
        return
    token = deployments.contract(w3, "RewardToken")
    stake = 100 * WAD
    send_transaction(w3, token.functions.approve(registry.address, stake), key)
    send_transaction(w3, registry.functions.enroll(stake), key)


@dataclass
class World:
    client: TestClient
    operator: dict[str, str]
    round: dict
    deployments: Deployments


@pytest.fixture
def world(client: TestClient, w3: Web3, deployments: Deployments) -> World:
    """Genesis model uploaded, a round open, organizations enrolled and registered (NEVER_ENROLLED has no
    stake, so the API refuses to register it)."""
    operator = login(client, OPERATOR)
    response = client.post("/v1/models", content=encode_weights(MODEL), headers=operator)
    assert response.status_code == 201, response.text
    registry = deployments.contract(w3, "ParticipantRegistry")
    for index in ORGS + (SLASHED,):
        ensure_enrolled(w3, deployments, index)
        if index == SLASHED and not registry.functions.isActive(address_of(index)).call():
            continue  # slashed by an earlier test of the session: it may no longer register
        headers = login(client, index)
        response = client.post("/v1/participants", json={"org_name": f"org {index}"}, headers=headers)
        assert response.status_code == 200, response.text
    response = client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator)
    assert response.status_code == 201, response.text
    return World(client, operator, response.json(), deployments)


def verified(world: World, index: int, envelope: bytes, signature: str) -> submissions.Verified:
    """The API's own verification of an update by organization ``index`` for the world's round (no record),
    for tests that then drive ``submissions.record`` themselves (races, cleanup, sweeps)."""
    state = world.client.app.state.fl
    with state.read_sessions() as session:
        result = submissions.verify(
            session,
            chain=state.chain(),
            key_directory=state.settings.resolved_key_dir,
            subject=address_of(index),
            round_id=world.round["id"],
            envelope=envelope,
            signature=signature,
        )
    assert isinstance(result, submissions.Verified)
    return result


def make_update(
    world: World,
    index: int,
    *,
    round_id: int | None = None,
    model_version: int | None = None,
    num_samples: int = 100,
    delta: dict[str, np.ndarray] | None = None,
    signer_index: int | None = None,
    seed: int = 0,
    plaintext: bytes | None = None,
) -> tuple[bytes, str]:
    """An envelope and its EIP-712 signature, built exactly as the SDK builds them (around ``plaintext``
    instead of the encoded ``delta`` when given)."""
    key_info = world.client.get("/v1/keys/current").json()
    round_id = world.round["id"] if round_id is None else round_id
    model_version = world.round["model_version"] if model_version is None else model_version
    rng = np.random.default_rng(seed)
    delta = delta or {name: rng.normal(size=a.shape).astype(np.float32) for name, a in MODEL.items()}
    envelope = seal(
        encode_update(delta) if plaintext is None else plaintext,
        key_info["public_key_pem"].encode(),
        round_id=round_id,
        model_version=model_version,
        participant=address_of(index),
        num_samples=num_samples,
    )
    signature = sign_update(
        dev_private_key(index if signer_index is None else signer_index),
        chain_id=world.deployments.chain_id,
        verifying_contract=world.deployments.addresses["ContributionLedger"],
        round_id=round_id,
        model_version=model_version,
        payload_hash=hashlib.sha256(envelope).digest(),
        num_samples=num_samples,
    )
    return envelope, signature


def post_update(world: World, index: int, envelope: bytes, signature: str, round_id: int | None = None):  # type: ignore[no-untyped-def]
    return world.client.post(
        f"/v1/rounds/{world.round['id'] if round_id is None else round_id}/updates",
        content=envelope,
        headers={
            **login(world.client, index),
            "X-Update-Signature": signature,
            "Content-Type": "application/octet-stream",
        },
    )
