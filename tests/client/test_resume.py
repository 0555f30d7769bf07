"""Issue 21.6, the SDK's side: an organization that anyone suspended for inactivity resumes itself on-chain
from its run loop and takes part in the round, instead of meeting 403 and stopping. On a Hardhat node of
this module's own (the test moves the chain's clock a week ahead)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from client.data import Dataset
from client.sdk import Organization
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.chain.reader import ChainParticipant, RegistryStatus
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import dev_private_key
from tests.client.conftest import CLIENT_ORGS

pytestmark = [pytest.mark.chain, pytest.mark.redis]

WEEK_AND_A_MINUTE = 7 * 24 * 3600 + 60
OUTSIDER = 19


@pytest.fixture(scope="module")
def dev_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevChain, Deployments]]:
    workdir: Path = tmp_path_factory.mktemp("resume-chain")
    node = DevChain(port=free_port(), log_path=workdir / "node.log")
    node.start()
    try:
        yield node, node.deploy(workdir / "deployments.json")
    finally:
        node.stop()


@pytest.fixture(scope="module")
def w3(dev_chain: tuple[DevChain, Deployments]) -> Web3:
    return Web3(Web3.HTTPProvider(dev_chain[0].rpc_url))


@pytest.fixture(scope="module")
def deployments(dev_chain: tuple[DevChain, Deployments]) -> Deployments:
    return dev_chain[1]


@pytest.fixture(scope="module")
def deployments_file(dev_chain: tuple[DevChain, Deployments]) -> Path:
    return dev_chain[0].log_path.parent / "deployments.json"


def test_the_run_loop_resumes_an_organization_suspended_for_inactivity(
    make_org: Any,
    w3: Web3,
    deployments: Deployments,
    open_round: dict[str, Any],
    digits_parts: list[Dataset],
) -> None:
    org: Organization = make_org(CLIENT_ORGS[0])
    org.setup()
    registry = deployments.contract(w3, "ParticipantRegistry")
    address = org.address
    # A week without posted rounds (a backlog, a quiet federation): anyone may now suspend the organization.
    w3.provider.make_request("evm_increaseTime", [WEEK_AND_A_MINUTE])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    send_transaction(w3, registry.functions.suspendInactive([address]), dev_private_key(OUTSIDER))

    def record() -> ChainParticipant:
        return ChainParticipant.from_record(registry, registry.functions.participantOf(address).call())

    assert record().status == RegistryStatus.suspended and record().inactive

    events: list[tuple[str, dict[str, Any]]] = []
    stop = threading.Event()
    timer = threading.Timer(120, stop.set)  # a bound, should the loop not submit
    timer.start()
    try:
        submissions = org.run(
            digits_parts[0],
            max_rounds=1,
            seed=0,
            stop=stop,
            on_event=lambda kind, payload: events.append((kind, payload)),
        )
    finally:
        timer.cancel()
    assert [kind for kind, _ in events] == ["round_open", "resumed", "submitted"], events
    assert [s.round_id for s in submissions] == [open_round["id"]]
    assert record().status == RegistryStatus.active and not record().inactive
