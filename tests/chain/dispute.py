"""A Hardhat node of a test module's own, deployed with a one-hour dispute window and a guardian, and what its
tests do on it: record a round, cancel its rewards, let the window pass, write the rows the worker leaves.

The session's dev chain has no window (its rewards are claimable at once and never cancellable), so a module
that needs one names these fixtures in its namespace; they replace the session's for every fixture built on
them (the API's settings too)::

    dev_chain, w3, deployments, deployments_file = (
        dispute.dev_chain, dispute.w3, dispute.deployments, dispute.deployments_file
    )
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from web3 import Web3

from db.base import utcnow
from db.models import Contribution, Participant, Round, RoundStatus, ServerKey, Update, UpdateStatus
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.chain.merkle import RewardTree
from fedledger.chain.tx import send_transaction
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from fedledger.domain import model_versions as model_service
from tests.chain.ledger import next_round_id, record_round
from tests.middleware.conftest import address_of

WINDOW = 3600
GUARDIAN = 19  # dev account granted GUARDIAN_ROLE on these ledgers (no other role, no organization)


@pytest.fixture(scope="module")
def dev_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevChain, Deployments]]:
    workdir: Path = tmp_path_factory.mktemp("dispute-chain")
    node = DevChain(port=free_port(), log_path=workdir / "node.log")
    node.start()
    try:
        yield (
            node,
            node.deploy(
                workdir / "deployments.json",
                env={
                    "FEDLEDGER_DISPUTE_WINDOW": str(WINDOW),
                    "FEDLEDGER_GUARDIAN_ADDRESS": address_of(GUARDIAN),
                },
            ),
        )
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


def pass_the_window(w3: Web3, seconds: int = WINDOW) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def claimable_at(w3: Web3, deployments: Deployments, round_id: int) -> int:
    return int(deployments.contract(w3, "RewardDistributor").functions.roundRewards(round_id).call()[3])


def cancel(w3: Web3, deployments: Deployments, round_id: int) -> None:
    """The guardian cancels the round's rewards (inside their dispute window, as the ledger requires)."""
    ledger = deployments.contract(w3, "ContributionLedger")
    reason = b"stolen-aggregator-key".ljust(32, b"\0")
    send_transaction(w3, ledger.functions.cancelRewards(round_id, reason), dev_private_key(GUARDIAN))
    assert deployments.contract(w3, "RewardDistributor").functions.roundRewards(round_id).call()[4]


def recorded_round(
    w3: Web3, deployments: Deployments, rewards: dict[str, int], gap: int = 1
) -> tuple[int, RewardTree]:
    """A round recorded on-chain paying ``rewards``, ``gap`` above the latest (clear of database rounds)."""
    round_id = next_round_id(w3, deployments, gap)
    return round_id, record_round(
        w3, deployments, round_id, hashlib.sha256(b"m%d" % round_id).digest(), rewards
    )


def posted_in_database(settings: Settings, round_id: int, tree: RewardTree, rewards: dict[str, int]) -> None:
    """The rows the worker leaves for a posted round that pays ``rewards``, so the API serves them."""
    with session_factory(settings.resolved_database_url).begin() as session:
        model = model_service.require_active(session)
        key = session.scalars(select(ServerKey).where(ServerKey.is_current)).one()
        now = utcnow()
        session.add(
            Round(
                id=round_id,
                status=RoundStatus.posted,
                model_version_id=model.id,
                deadline=now,
                quorum=1,
                strategy="fedavg",
                params={},
                closed_at=now,
            )
        )
        for address, amount in rewards.items():
            participant = session.scalars(select(Participant).where(Participant.address == address)).first()
            if participant is None:
                participant = Participant(address=address, org_name=address[:10])
                session.add(participant)
            session.flush()
            digest = hashlib.sha256(f"{round_id} {address}".encode()).hexdigest()
            update = Update(
                round_id=round_id,
                participant_id=participant.id,
                ciphertext_hash=digest,
                key_id=key.kid,
                model_version_id=model.id,
                num_samples=100,
                signature="0x",
                size_bytes=0,
                receipt_id=digest[:32],
                status=UpdateStatus.aggregated,
            )
            session.add(update)
            session.flush()
            session.add(
                Contribution(
                    round_id=round_id,
                    participant_id=participant.id,
                    update_id=update.id,
                    quality=90.0,
                    timeliness=90.0,
                    honesty=90.0,
                    fitness=90.0,
                    kept=True,
                    reward_wei=str(amount),
                    merkle_proof=["0x" + p.hex() for p in tree.proof(address)],
                    reputation_after=60.0,
                )
            )
