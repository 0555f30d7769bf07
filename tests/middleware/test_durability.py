"""An acknowledged submission survives a SIGKILL of the API right after its 202.

A real uvicorn process (``fedledger api``) on SQLite, the session's Hardhat node and real Redis: the
submission is acknowledged, the whole process group is killed at once (no shutdown hooks, no flush),
the API is started again on the same data, and the update is there, byte for byte, with its receipt.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.payload import encode_weights
from tests.middleware.conftest import (
    MODEL,
    OPERATOR,
    ORGS,
    World,
    address_of,
    ensure_enrolled,
    login,
    make_update,
)
from tests.services import redis_url

pytestmark = [pytest.mark.chain, pytest.mark.redis]


class Api:
    """``fedledger api`` as a child process group on fixed settings."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> httpx.Client:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "api"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if http.get("/healthz").status_code == 200:
                    return http
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def api(tmp_path: Path, dev_chain: tuple[DevChain, Deployments], deployments_file: Path) -> Iterator[Api]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")} | {
        "FEDLEDGER_DATA_DIR": str(tmp_path / "var"),
        "FEDLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
        "FEDLEDGER_DEPLOYMENTS_FILE": str(deployments_file),
        "FEDLEDGER_CHAIN_RPC_URL": dev_chain[0].rpc_url,
        "FEDLEDGER_BROKER_URL": redis_url(10),
        "FEDLEDGER_REDIS_URL": redis_url(10),
        "FEDLEDGER_REDIS_NAMESPACE": f"durable-{uuid.uuid4().hex[:8]}",
        "FEDLEDGER_API_HOST": "127.0.0.1",
        "FEDLEDGER_API_PORT": str(port),
        "FEDLEDGER_SIWE_DOMAIN": f"127.0.0.1:{port}",
        "FEDLEDGER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "FEDLEDGER_OPERATOR_ADDRESSES": address_of(OPERATOR),
    }
    server = Api(env, port, tmp_path / "api.log")
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def test_an_acknowledged_submission_survives_a_sigkill_right_after_the_202(
    api: Api, w3: Web3, deployments: Deployments
) -> None:
    http = api.start()
    operator = login(http, OPERATOR)  # type: ignore[arg-type]
    assert http.post("/v1/models", content=encode_weights(MODEL), headers=operator).status_code == 201
    index = ORGS[3]
    ensure_enrolled(w3, deployments, index)
    org = login(http, index)  # type: ignore[arg-type]
    assert http.post("/v1/participants", json={"org_name": "durable"}, headers=org).status_code == 200
    round_ = http.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 50}, headers=operator).json()
    world = World(http, operator, round_, deployments)  # type: ignore[arg-type]
    envelope, signature = make_update(world, index)
    headers = {**org, "X-Update-Signature": signature, "Content-Type": "application/octet-stream"}

    response = http.post(f"/v1/rounds/{round_['id']}/updates", content=envelope, headers=headers)
    api.kill()  # at once: the 202 is the only promise the client has
    assert response.status_code == 202, response.text
    receipt = response.json()

    http = api.start()
    assert http.get(f"/v1/rounds/{round_['id']}").json()["submissions"] == 1
    again = http.post(
        f"/v1/rounds/{round_['id']}/updates",
        content=envelope,
        headers={**headers, **login(http, index)},  # type: ignore[arg-type]
    )
    assert again.status_code == 202, again.text
    assert again.json()["receipt_id"] == receipt["receipt_id"] and again.json()["replayed"] is True
    digest = hashlib.sha256(envelope).hexdigest()
    blob = Path(api.env["FEDLEDGER_DATA_DIR"]) / "blobs" / digest[:2] / digest
    assert blob.read_bytes() == envelope
