"""Issue 11.5, the platform's side: posting refreshes the on-chain activity evidence of a round's organizations
and suspends registered organizations idle past the governed activity_timeout (a fresh node: time travels)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from aggregator.worker.gateway import ChainGateway
from aggregator.worker.posting import _apply_activity_timeout
from db.base import utcnow
from db.migrate import upgrade
from db.models import Participant
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.chain.params import WAD
from fedledger.chain.reader import ChainParticipant, RegistryStatus
from fedledger.chain.tx import TransactionReverted, send_transaction
from fedledger.devkeys import AGGREGATOR_INDEX, FIRST_ORGANIZATION_INDEX, dev_private_key

pytestmark = pytest.mark.chain

TIMEOUT = 7 * 24 * 3600


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[DevChain, Deployments]]:
    chain = DevChain(port=free_port(), log_path=tmp_path / "node.log")
    chain.start()
    try:
        yield chain, chain.deploy(tmp_path / "deployments.json")
    finally:
        chain.stop()


def post_activity(
    sessions: sessionmaker[Session], gateway: ChainGateway, round_id: int, participants: list[str]
) -> dict[str, str]:
    """What posting sends about activity: every contributor marked for the round, then the idle suspended."""
    sent = {}
    marked = gateway.mark_active(round_id, participants)
    if marked:
        sent["active"] = marked.tx_hash
    sent.update(_apply_activity_timeout(sessions, gateway, round_id, TIMEOUT))
    return sent


def test_posting_marks_the_round_active_and_suspends_the_idle(
    node: tuple[DevChain, Deployments], tmp_path: Path
) -> None:
    chain, deployments = node
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    registry = deployments.contract(w3, "ParticipantRegistry")
    token = deployments.contract(w3, "RewardToken")
    keys = {
        name: dev_private_key(FIRST_ORGANIZATION_INDEX + i) for i, name in enumerate(("busy", "idle", "new"))
    }
    addresses = {name: Account.from_key(key).address for name, key in keys.items()}
    for name in ("busy", "idle"):
        send_transaction(w3, token.functions.approve(registry.address, 100 * WAD), keys[name])
        send_transaction(w3, registry.functions.enroll(100 * WAD), keys[name])

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    sessions = session_factory(url)
    with sessions.begin() as session:
        long_ago = utcnow() - timedelta(seconds=TIMEOUT + 3600)
        for name in ("busy", "idle"):
            session.add(Participant(address=addresses[name], org_name=name, created_at=long_ago))
        # Registered only now: not a candidate whatever the chain says.
        session.add(Participant(address=addresses["new"], org_name="new"))
    gateway = ChainGateway(chain.rpc_url, deployments, dev_private_key(AGGREGATOR_INDEX), sessions)

    def record(name: str) -> ChainParticipant:
        return ChainParticipant.from_record(
            registry, registry.functions.participantOf(addresses[name]).call()
        )

    # Within the timeout of enrolling: `busy` took part in round 1 and is refreshed, nobody is idle.
    assert set(post_activity(sessions, gateway, 1, [addresses["busy"]])) == {"active"}
    # Past the timeout: `busy` took part in round 2 and is refreshed; `idle` did not and is suspended.
    w3.provider.make_request("evm_increaseTime", [TIMEOUT + 60])
    w3.provider.make_request("evm_mine", [])
    sent = post_activity(sessions, gateway, 2, [addresses["busy"]])
    assert set(sent) == {"active", "inactive"}
    assert record("busy").status == RegistryStatus.active
    now = int(w3.eth.get_block("latest")["timestamp"])
    assert now - 120 < record("busy").last_active_at <= now
    idle = record("idle")
    assert idle.status == RegistryStatus.suspended and idle.inactive
    # Posting again is idempotent (the purposes are sent once); the organization resumes by itself.
    assert post_activity(sessions, gateway, 2, [addresses["busy"]]) == {"active": sent["active"]}
    send_transaction(w3, registry.functions.resume(), keys["idle"])
    assert record("idle").status == RegistryStatus.active


def test_an_outsider_cannot_suspend_an_organization_that_took_part_in_a_recent_round(
    node: tuple[DevChain, Deployments], tmp_path: Path
) -> None:
    """Issue 21.6, the attack: the evidence used to be refreshed only when older than half the timeout, so an
    organization refreshed on day 0 that took part in a round posted on day 3.4 kept its day-0 evidence, and
    anyone could suspend it on day 7 (its next submission: 403). Every posted round refreshes it now."""
    chain, deployments = node
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    registry = deployments.contract(w3, "ParticipantRegistry")
    token = deployments.contract(w3, "RewardToken")
    key = dev_private_key(FIRST_ORGANIZATION_INDEX)
    address = Account.from_key(key).address
    send_transaction(w3, token.functions.approve(registry.address, 100 * WAD), key)
    send_transaction(w3, registry.functions.enroll(100 * WAD), key)  # lastActiveAt: day 0
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    sessions = session_factory(url)
    with sessions.begin() as session:
        session.add(Participant(address=address, org_name="busy"))
    gateway = ChainGateway(chain.rpc_url, deployments, dev_private_key(AGGREGATOR_INDEX), sessions)

    def travel(seconds: int) -> None:
        w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    travel(int(TIMEOUT * 0.49))  # day 3.4: the organization takes part in round 1, which is posted
    post_activity(sessions, gateway, 1, [address])
    travel(int(TIMEOUT * 0.52))  # day 7.07: past the timeout since day 0, 3.6 days after its round
    outsider = dev_private_key(19)
    with pytest.raises(TransactionReverted, match="NotInactive"):
        send_transaction(w3, registry.functions.suspendInactive([address]), outsider)
    status = ChainParticipant.from_record(registry, registry.functions.participantOf(address).call()).status
    assert status == RegistryStatus.active
