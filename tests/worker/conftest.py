"""A whole platform for the worker tests: its own Hardhat node and Redis server, PostgreSQL, the API in-process
and a real Celery worker process (with its beat), all on one set of settings."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis
from eth_account import Account
from fastapi.testclient import TestClient
from web3 import Web3

from aggregator.round.server_update import reference_update, server_data
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.chain.params import WAD
from fedledger.chain.tx import send_transaction
from fedledger.config import Settings
from fedledger.crypto.chunked import coordinate_order, layout_hash, seal_chunked, signed_payload_hash
from fedledger.crypto.eip712 import sign_update
from fedledger.crypto.envelope import seal
from fedledger.datasets import digits_split, load_holdout
from fedledger.devkeys import dev_private_key
from fedledger.domain.tasks import CeleryTaskQueue
from fedledger.models import init_softmax, train
from fedledger.payload import decode_weights, encode_update, encode_weights, flatten
from middleware.app import create_app
from tests.databases import MigratedDatabases
from tests.services import redis_url

OPERATOR = 2  # the model signer's account doubles as operator here; on-chain it only signs
ORGS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12)


def address_of(index: int) -> str:
    return Account.from_key(dev_private_key(index)).address


@pytest.fixture(scope="session")
def deployed_chain(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DevChain, Deployments, Path]]:
    """One Hardhat node for the session, deployed once; each test gets it back in exactly this state
    (:func:`chain`): a node start and a deployment per test cost 10-20 s of setup each."""
    workdir = tmp_path_factory.mktemp("worker-chain")
    node = DevChain(port=free_port(), log_path=workdir / "node.log")
    node.start()
    try:
        yield node, node.deploy(workdir / "deployments.json"), workdir / "deployments.json"
    finally:
        node.stop()


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Redis server of the worker tests' own, on a free port: they run beside the other tests of shared
    services, in the other xdist worker (tests/conftest.py), and one of them restarts its server."""
    workdir = tmp_path_factory.mktemp("worker-redis")
    port = free_port()
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [*command, "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start on port {port}; see {workdir / 'redis.log'}"
                ) from exc
            time.sleep(0.05)
    try:
        yield port
    finally:
        # Whichever server listens there now: this one, or the one the restart test started in its place.
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def chain(
    deployed_chain: tuple[DevChain, Deployments, Path],
) -> Iterator[tuple[DevChain, Deployments, Path]]:
    """The session's node, reverted after the test to its state after deployment (nobody enrolled; blocks,
    balances, stakes, logs and the clock offset a test added), so no test sees another's rounds or
    slashes. A snapshot is single-use in Hardhat: one is taken per test."""
    node = deployed_chain[0]
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield deployed_chain
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # a test that stopped mining and failed
        reverted = w3.provider.make_request("evm_revert", [snapshot])
        assert reverted.get("result") is True, reverted


@pytest.fixture
def database_url(migrated_databases: MigratedDatabases) -> Iterator[str]:
    """A migrated PostgreSQL schema of the test's own: a copy, not a migration (tests/databases.py)."""
    with migrated_databases.postgres_url() as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str, chain, redis_port: int) -> Settings:  # type: ignore[no-untyped-def]
    broker = redis_url(13, redis_port)
    redis.Redis.from_url(broker).flushdb()
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        broker_url=broker,
        redis_url=redis_url(12, redis_port),
        redis_namespace=f"w-{uuid.uuid4().hex[:8]}",
        chain_rpc_url=chain[0].rpc_url,
        deployments_file=chain[2],
        siwe_domain="testserver",
        public_url="http://testserver",
        operator_addresses=[address_of(OPERATOR)],
        tick_seconds=1.0,
        close_lease_seconds=4,
        rate_limit_per_minute_ip=10**6,
        rate_limit_per_minute_address=10**6,
        rate_limit_per_minute_ip_nonce=10**6,
        rate_limit_per_minute_ip_register=10**6,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list):
            value = ",".join(value)
        env[f"FEDLEDGER_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """``fedledger worker`` as its own process group, so a SIGKILL takes the whole worker down."""

    def __init__(self, settings: Settings, log: Path, *args: str) -> None:
        self.settings, self.log, self.args = settings, log, args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--loglevel", "INFO", *self.args],
                env=settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path / "worker.log")
    process.start()
    yield process
    # The test is over: nothing the worker would still finish matters to it, and a warm shutdown (the beat,
    # then the pool) takes 2-3 s. Killed, it writes nothing more into the database the next test gets.
    process.kill()


def misaligned(
    weights: dict[str, np.ndarray], delta: dict[str, np.ndarray], round_id: int
) -> dict[str, np.ndarray]:
    """The honest update turned slightly away from the server's reference (cosine -0.05, same norm), as the
    server computes it from its public root data: FLTrust gives it no trust (left out of the aggregate), yet
    it is no outlier and no direction evidence (cosine above -0.2): excluded, not flagged."""
    names = list(weights)
    root, _ = server_data(load_holdout("digits"))
    g = reference_update(weights, names, root, round_id)
    assert g is not None
    g = g / np.linalg.norm(g)
    d = np.concatenate([delta[n].reshape(-1) for n in names]).astype(np.float64)
    perp = d - (d @ g) * g
    u = np.linalg.norm(d) * (np.sqrt(1 - 0.05**2) * perp / np.linalg.norm(perp) - 0.05 * g)
    out, offset = {}, 0
    for n in names:
        size = weights[n].size
        out[n] = u[offset : offset + size].reshape(weights[n].shape).astype(np.float32)
        offset += size
    return out


def login(client: TestClient, index: int) -> dict[str, str]:
    from eth_account.messages import encode_defunct

    key = dev_private_key(index)
    challenge = client.post("/v1/auth/nonce", json={"address": address_of(index)}).json()
    signature = Account.sign_message(encode_defunct(text=challenge["message"]), key).signature.to_0x_hex()
    token = client.post(
        "/v1/auth/login", json={"message": challenge["message"], "signature": signature}
    ).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def ensure_enrolled(w3: Web3, deployments: Deployments, index: int) -> None:
    key = dev_private_key(index)
    registry = deployments.contract(w3, "ParticipantRegistry")
    if registry.functions.participantOf(address_of(index)).call()[-1] != 0:
        return
    token = deployments.contract(w3, "RewardToken")
    send_transaction(w3, token.functions.approve(registry.address, 100 * WAD), key)
    send_transaction(w3, registry.functions.enroll(100 * WAD), key)


@dataclass
class Platform:
    client: TestClient
    settings: Settings
    w3: Web3
    deployments: Deployments
    operator: dict[str, str]
    partitions: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def open_round(
        self, duration: int = 30, quorum: int | None = 5, cohort: Sequence[int] | None = None
    ) -> dict:
        """Open a round. Ten organizations are registered and a round closes early only once every active
        one (or, with ``cohort``, every invited one) has submitted: a test that submits fewer than all ten
        names its submitters as the cohort, or waits for the deadline (hence a short one)."""
        body = (
            {"duration_seconds": duration}
            | ({} if quorum is None else {"quorum": quorum})
            | ({} if cohort is None else {"cohort": [address_of(i) for i in cohort]})
        )
        response = self.client.post("/v1/rounds", json=body, headers=self.operator)
        assert response.status_code == 201, response.text
        return response.json()

    def global_weights(self) -> dict[str, np.ndarray]:
        version = self.client.get("/v1/models/current").json()["version"]
        return decode_weights(self.client.get(f"/v1/models/{version}/weights").content)

    def submit(
        self,
        index: int,
        round_: dict,
        attack: str | None = None,
        seed: int = 0,
        num_samples: int | None = None,
        chunked: bool = False,
    ) -> dict:
        weights = self.global_weights()
        X, y = self.partitions[index]
        if attack == "lazy":  # a wallet racing to the opening: one pass over ten examples
            X, y = X[:10], y[:10]
        local = train(
            weights,
            X,
            y,
            epochs=1 if attack == "lazy" else 3,
            lr=0.5,
            batch=32,
            rng=np.random.default_rng(seed + index),
        )
        delta = {k: local[k] - weights[k] for k in weights}
        if attack == "scaling":
            delta = {k: v * 100 for k, v in delta.items()}
        if attack == "signflip":
            delta = {k: -v for k, v in delta.items()}
        if attack == "misaligned":
            delta = misaligned(weights, delta, round_["id"])
        claimed = len(y) if num_samples is None else num_samples
        key = self.client.get("/v1/keys/current").json()
        fields = {
            "round_id": round_["id"],
            "model_version": round_["model_version"],
            "participant": address_of(index),
            "num_samples": claimed,
        }
        if chunked:  # as the SDK seals a large model: 100-coordinate chunks, the signature over the head
            shapes = coordinate_order({k: v.shape for k, v in delta.items()})
            envelope = seal_chunked(
                flatten(delta, shapes),
                key["public_key_pem"].encode(),
                layout=layout_hash(shapes),
                chunk_coords=100,
                **fields,
            )
        else:
            envelope = seal(encode_update(delta), key["public_key_pem"].encode(), **fields)
        signature = sign_update(
            dev_private_key(index),
            chain_id=self.deployments.chain_id,
            verifying_contract=self.deployments.addresses["ContributionLedger"],
            round_id=round_["id"],
            model_version=round_["model_version"],
            payload_hash=signed_payload_hash(envelope),
            num_samples=claimed,
        )
        response = self.client.post(
            f"/v1/rounds/{round_['id']}/updates",
            content=envelope,
            headers={**login(self.client, index), "X-Update-Signature": signature},
        )
        assert response.status_code == 202, response.text
        return response.json()

    def wait_for(self, round_id: int, statuses: set[str], timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            round_ = self.client.get(f"/v1/rounds/{round_id}").json()
            if round_["status"] in statuses:
                return round_
            time.sleep(0.3)
        raise AssertionError(
            f"round {round_id} stayed {round_['status']} (wanted {statuses}); see the worker log"
        )


@pytest.fixture
def genesis() -> dict[str, np.ndarray]:
    """The platform's genesis model: softmax regression on the digits (a test parametrizes ``genesis`` to
    run on another built-in model; organizations train whichever it is)."""
    X_train, _, _, _ = digits_split()
    return init_softmax(X_train.shape[1], 10)


@pytest.fixture
def platform(settings: Settings, chain, genesis: dict[str, np.ndarray]) -> Iterator[Platform]:  # type: ignore[no-untyped-def]
    node, deployments, _ = chain
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    with TestClient(create_app(settings, queue=CeleryTaskQueue(settings.resolved_broker_url))) as client:
        operator = login(client, OPERATOR)
        X_train, y_train, _, _ = digits_split()
        assert client.post("/v1/models", content=encode_weights(genesis), headers=operator).status_code == 201
        shards = np.array_split(np.random.default_rng(0).permutation(len(y_train)), len(ORGS))
        platform = Platform(
            client,
            settings,
            w3,
            deployments,
            operator,
            {i: (X_train[s], y_train[s]) for i, s in zip(ORGS, shards, strict=True)},
        )
        registry = deployments.contract(w3, "ParticipantRegistry")
        for index in ORGS:
            # The API registers only organizations enrolled with stake; one slashed by an earlier test of
            # the session stays unregistered (its submissions are refused either way).
            ensure_enrolled(w3, deployments, index)
            if not registry.functions.isActive(address_of(index)).call():
                continue
            response = client.post(
                "/v1/participants", json={"org_name": f"org {index}"}, headers=login(client, index)
            )
            assert response.status_code == 200, response.text
        yield platform
