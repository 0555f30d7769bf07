"""The dashboard against a real API (uvicorn over HTTP, on the middleware tests' settings) and the session's
Hardhat node. The middleware fixtures (``settings``, ``client``, ``world``) are reused as they are."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from eth_account import Account
from sqlalchemy import select
from web3 import Web3

from db.base import utcnow
from db.models import (
    Aggregation,
    Contribution,
    ModelStatus,
    Participant,
    Round,
    RoundStatus,
    ServerKey,
    Update,
    UpdateStatus,
)
from db.session import session_factory
from fedledger.chain.devnode import free_port
from fedledger.chain.ledger import LedgerContribution
from fedledger.chain.merkle import RewardTree
from fedledger.chain.params import WAD
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from fedledger.domain import model_versions as model_service
from fedledger.domain.blobstore import FilesystemBlobStore
from fedledger.payload import encode_weights
from middleware.app import create_app
from tests.chain.ledger import next_round_id, record_round
from tests.middleware.conftest import (  # noqa: F401 - fixtures reused by this package's tests
    MODEL,
    ORGS,
    World,
    address_of,
    client,
    database_url,
    make_update,
    post_update,
    settings,
    world,
)

# The middleware fixtures, re-exported so pytest finds them for this package's tests.
__all__ = ["client", "database_url", "settings", "world"]

# Dev accounts this package may use on-chain (other packages' tests use the others).
DASHBOARD_ORGS = (12, 13, 14, 15)


@dataclass
class ApiServer:
    url: str
    settings: Settings


def serve(settings: Settings) -> Iterator[ApiServer]:
    """The real API app (``create_app``) under uvicorn on a free port, in a background thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name=f"api-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    try:
        yield ApiServer(url, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def api_server(settings: Settings) -> Iterator[ApiServer]:
    yield from serve(settings)


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, api_server: ApiServer, dev_chain) -> ApiServer:  # type: ignore[no-untyped-def]
    """Settings the dashboard reads (it builds a fresh ``Settings()`` per run)."""
    monkeypatch.setenv("FEDLEDGER_API_URL", api_server.url)
    monkeypatch.setenv("FEDLEDGER_CHAIN_RPC_URL", dev_chain[0].rpc_url)
    # The live API shares the machine with the suite's other worker and the chain: under that load one
    # answer took longer than the default 10 s (a page's "Chain unreachable", not a fault under test).
    monkeypatch.setenv("FEDLEDGER_DASHBOARD_API_TIMEOUT", "30")
    return api_server


@dataclass
class ClosedRound:
    round_id: int
    model_version: int
    kept: list[str]
    excluded: list[str]
    fitness: dict[str, float]
    reward_wei: dict[str, int]
    accuracy: float
    loss_after: float
    epsilon_spent: float


def close_round_as_the_worker_would(world: World, settings: Settings) -> ClosedRound:
    """Organizations 3, 4, 5 submit real updates through the API; then the round's close is written the way
    the aggregator's ``close_round`` writes it (aggregation row, scored contributions, a new signed model
    version, round POSTED). The aggregation worker is not part of this package; its rows are."""
    orgs = ORGS[:3]
    for i, index in enumerate(orgs):
        envelope, signature = make_update(world, index, seed=i)
        response = post_update(world, index, envelope, signature)
        assert response.status_code == 202, response.text
    addresses = [address_of(i) for i in orgs]
    scores = {  # quality, timeliness, honesty -> fitness = 0.4 Q + 0.3 T + 0.3 H
        addresses[0]: (90.0, 95.0, 92.0),
        addresses[1]: (70.0, 80.0, 85.0),
        addresses[2]: (20.0, 60.0, 10.0),
    }
    fitness = {a: round(0.4 * q + 0.3 * t + 0.3 * h, 2) for a, (q, t, h) in scores.items()}
    rewards = {addresses[0]: 150 * WAD, addresses[1]: 75 * WAD, addresses[2]: 0}
    kept, excluded = addresses[:2], addresses[2:]
    sessions = session_factory(settings.resolved_database_url)
    deployments = world.deployments
    with sessions.begin() as session:
        round_ = session.get(Round, world.round["id"])
        parent = model_service.active(session)
        assert round_ is not None and parent is not None
        new_model = model_service.store_version(
            session,
            FilesystemBlobStore(settings.resolved_blob_dir),
            encode_weights({k: v + 0.5 for k, v in MODEL.items()}),
            signer_key=settings.resolved_model_signer_key,
            chain_id=deployments.chain_id,
            verifying_contract=deployments.addresses["ContributionLedger"],
            parent=parent,
            metrics={"holdout_loss": 0.41, "holdout_accuracy": 0.87},
            produced_by_round_id=round_.id,
        )
        session.add(
            Aggregation(
                round_id=round_.id,
                strategy=round_.strategy,
                params={},
                kept=kept,
                excluded=excluded,
                rejected=[],
                model_version_id=new_model.id,
                rolled_back=False,
                holdout_loss_before=0.69,
                holdout_loss_after=0.41,
                holdout_accuracy=0.87,
                dp_noise_std=0.01,
                epsilon_spent=1.25,
                total_reward_wei=str(sum(rewards.values())),
                posted_at=utcnow(),
            )
        )
        for address in addresses:
            participant = session.scalars(select(Participant).where(Participant.address == address)).one()
            update = session.scalars(
                select(Update).where(Update.round_id == round_.id, Update.participant_id == participant.id)
            ).one()
            update.status = UpdateStatus.aggregated if address in kept else UpdateStatus.excluded
            q, t, h = scores[address]
            participant.reputation = 60.0 if address in kept else 40.0
            session.add(
                Contribution(
                    round_id=round_.id,
                    participant_id=participant.id,
                    update_id=update.id,
                    quality=q,
                    timeliness=t,
                    honesty=h,
                    fitness=fitness[address],
                    kept=address in kept,
                    byzantine=address in excluded,
                    reward_wei=str(rewards[address]),
                    merkle_proof=[],
                    reputation_after=participant.reputation,
                    # As the close stores it: codes, and what was measured by code.
                    evidence=["direction_outlier"] if address in excluded else [],
                    evidence_detail={"direction_outlier": "cosine -0.412"} if address in excluded else {},
                )
            )
        round_.status = RoundStatus.posted
        round_.closed_at = utcnow()
        version = new_model.id
        assert parent.status == ModelStatus.superseded
    return ClosedRound(
        world.round["id"],
        version,
        kept,
        excluded,
        fitness,
        {a: v for a, v in rewards.items()},
        0.87,
        0.41,
        1.25,
    )


def posted_reward_round(world: World, settings: Settings, w3: Web3, rewards: dict[int, int]) -> int:
    """A round posted on-chain whose rewards (dev index → token wei) the organizations can claim.

    Its id is unique on the session's chain (other tests record rounds too), so it is written with an explicit
    id: the database rows as the worker writes them (round, updates, scored contributions with their Merkle
    proofs), and the ledger record (``recordRound`` with the rewards root) sent with the aggregator's key."""
    round_id = next_round_id(w3, world.deployments, gap=1024)  # in order, at most 1024 ids apart
    addresses = {index: address_of(index) for index in rewards}
    tree = RewardTree.build(round_id, {addresses[i]: amount for i, amount in rewards.items()})
    sessions = session_factory(settings.resolved_database_url)
    update_hashes = {}
    with sessions.begin() as session:
        model = model_service.active(session)
        key = session.scalars(select(ServerKey).where(ServerKey.is_current)).one()
        assert model is not None
        now = utcnow()
        session.add(
            Round(
                id=round_id,
                status=RoundStatus.posted,
                model_version_id=model.id,
                opened_at=now,
                deadline=now,
                quorum=1,
                min_participants=1,
                strategy="fedavg",
                params={},
                closed_at=now,
            )
        )
        session.flush()
        for index, amount in rewards.items():
            participant = session.scalars(
                select(Participant).where(Participant.address == addresses[index])
            ).one()
            digest = hashlib.sha256(f"update {round_id} {index}".encode()).hexdigest()
            update_hashes[index] = bytes.fromhex(digest)
            update = Update(
                round_id=round_id,
                participant_id=participant.id,
                ciphertext_hash=digest,
                key_id=key.kid,
                model_version_id=model.id,
                num_samples=100,
                metrics={},
                signature="0x",
                size_bytes=0,
                receipt_id=digest,
                status=UpdateStatus.aggregated,
                submitted_at=now,
            )
            session.add(update)
            session.flush()
            session.add(
                Contribution(
                    round_id=round_id,
                    participant_id=participant.id,
                    update_id=update.id,
                    quality=80.0,
                    timeliness=90.0,
                    honesty=95.0,
                    fitness=87.5,
                    kept=True,
                    reward_wei=str(amount),
                    merkle_proof=["0x" + p.hex() for p in tree.proof(addresses[index])],
                    reputation_after=participant.reputation,
                )
            )
    record_round(
        w3,
        world.deployments,
        round_id,
        hashlib.sha256(b"model").digest(),
        {addresses[i]: amount for i, amount in rewards.items()},
        [
            LedgerContribution(addresses[i], update_hashes[i], 8000, 9000, 9500, 8750, amount)
            for i, amount in rewards.items()
        ],
    )
    return round_id


def open_next_round(world: World) -> dict:
    response = world.client.post(
        "/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=world.operator
    )
    assert response.status_code == 201, response.text
    return response.json()


def dashboard_account(index: int) -> tuple[str, str]:
    assert index in DASHBOARD_ORGS
    key = dev_private_key(index)
    return Account.from_key(key).address, key


def mine(w3: Web3, blocks: int) -> None:
    for _ in range(blocks):
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
