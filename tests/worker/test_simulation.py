"""The organization simulation end to end: SDK over real HTTP, a real worker, PostgreSQL, Redis, Hardhat."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from eth_account import Account
from web3 import Web3

from app.simulation import simulate
from fedledger.chain.devnode import free_port
from fedledger.config import Settings
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key
from fedledger.domain.tasks import CeleryTaskQueue
from middleware.app import create_app

pytestmark = [
    pytest.mark.celery,
    pytest.mark.chain,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
]


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    port = free_port()
    served = settings.model_copy(
        update={
            "siwe_domain": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "operator_addresses": [Account.from_key(dev_private_key(0)).address],
        }
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(served, queue=CeleryTaskQueue(served.resolved_broker_url)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def test_six_organizations_two_byzantine_three_rounds(api_url: str, chain, worker) -> None:  # type: ignore[no-untyped-def]
    node, deployments, _ = chain
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    token = deployments.contract(w3, "RewardToken")
    addresses = [Account.from_key(dev_private_key(FIRST_ORGANIZATION_INDEX + i)).address for i in range(6)]
    before = {a: token.functions.balanceOf(a).call() for a in addresses}

    report = simulate(
        api_url,
        node.rpc_url,
        orgs=6,
        byzantine=2,
        attack="scaling",
        rounds=3,
        operator_key=dev_private_key(0),
        round_seconds=120,
        log=lambda _: None,
    )

    assert [r.status for r in report.rounds] == ["POSTED"] * 3
    accuracies = [r.accuracy for r in report.rounds]
    assert accuracies[0] > 0.8 and accuracies[-1] >= accuracies[0] - 0.01, accuracies
    honest, attackers = addresses[:4], addresses[4:]
    stake = 100 * 10**18  # every organization staked the governed minimum when the simulation enrolled it
    for address in honest:
        claimed = int(report.claimed_wei[address])
        assert claimed > 0
        assert token.functions.balanceOf(address).call() == before[address] - stake + claimed
    for address in attackers:
        assert address not in report.claimed_wei
        assert token.functions.balanceOf(address).call() == before[address] - stake
    # A 100x scaled update is conclusive evidence: it slashes in the round it is found (issue 21.7), once.
    assert set(report.rounds[0].slashed) == set(attackers)
    assert not report.rounds[1].slashed and not report.rounds[2].slashed
