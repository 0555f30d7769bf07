"""Claims during a round's dispute window, on a Hardhat node of its own deployed with a one-hour window and a
guardian (the session's dev chain has no window, so its rewards are claimable at once and never cancellable).

The SDK reads when the round's rewards become claimable before it sends anything: inside the window
``claim_reward`` raises :class:`RewardNotClaimableYetError` saying when (UTC, seconds left) and what to do,
``claim_rewards`` skips the round and reports it, and ``fedledger client claim --round N`` prints the message
and exits 1 without a traceback. Once the chain's time passes the window, the same claims go through.

Rewards the guardian cancelled inside the window (``ContributionLedger.cancelRewards``) are never claimable:
``claim_reward`` raises :class:`RewardsCancelledError` (nothing sent), ``claim_rewards`` reports the round as
``cancelled`` and claims the other rounds, and the CLI says so.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from web3 import Web3

from client.errors import RewardNotClaimableYetError, RewardsCancelledError, TransactionFailedError
from client.sdk import Organization, Reward
from db.base import utcnow
from db.models import Contribution, Participant, Round, RoundStatus, ServerKey, Update, UpdateStatus
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.chain.merkle import RewardTree
from fedledger.chain.params import WAD
from fedledger.chain.reader import RoundRewards
from fedledger.chain.tx import send_transaction
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from fedledger.domain import model_versions as model_service
from tests.chain.ledger import next_round_id, record_round
from tests.client.conftest import CLIENT_ORGS
from tests.client.test_cli import cli, live_api  # noqa: F401 - the live API fixture, on this module's chain
from tests.middleware.conftest import address_of

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

WINDOW = 3600
GUARDIAN = 19  # dev account granted GUARDIAN_ROLE on this module's ledger (no other role, no organization)


# This module's own chain replaces the session's for every fixture built on it (the API's settings too).
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
    send_transaction(
        w3,
        ledger.functions.cancelRewards(round_id, b"stolen-aggregator-key".ljust(32, b"\0")),
        dev_private_key(GUARDIAN),
    )
    assert deployments.contract(w3, "RewardDistributor").functions.roundRewards(round_id).call()[4]


def recorded_round(w3: Web3, deployments: Deployments, rewards: dict[str, int]) -> tuple[int, RewardTree]:
    round_id = next_round_id(w3, deployments)
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


def test_a_claim_in_the_dispute_window_says_when_and_sends_nothing(
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[0])
    round_id, tree = recorded_round(w3, deployments, {org.address: 3 * WAD})
    reward = Reward(round_id, 3 * WAD, tuple("0x" + p.hex() for p in tree.proof(org.address)), claimed=False)
    opens = claimable_at(w3, deployments, round_id)
    token = deployments.contract(w3, "RewardToken")
    nonce, balance = w3.eth.get_transaction_count(org.address), token.functions.balanceOf(org.address).call()

    with pytest.raises(RewardNotClaimableYetError) as caught:
        org.claim_reward(reward)
    error = caught.value
    when = datetime.fromtimestamp(opens, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert error.round_id == round_id and error.claimable_at == opens
    assert WINDOW - 60 <= error.seconds_left <= WINDOW
    assert error.code == "reward_not_claimable_yet"
    assert f"becomes claimable at {when} (in {error.seconds_left} s" in str(error)
    assert "claim it again after that time" in str(error)
    assert w3.eth.get_transaction_count(org.address) == nonce  # checked first: no reverted transaction

    pass_the_window(w3)
    result = org.claim_reward(reward)
    assert result.status == "claimed" and result.tx_hash
    assert token.functions.balanceOf(org.address).call() - balance == 3 * WAD


def test_a_clock_ahead_of_the_chain_still_gets_the_typed_error(
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
) -> None:
    """The local clock says the window is over but the chain's block time does not: the contract's revert
    (DisputeWindowOpen, found by the simulation before anything is sent) becomes the same typed error."""
    org: Organization = make_org(CLIENT_ORGS[1])
    round_id, tree = recorded_round(w3, deployments, {org.address: WAD})
    reward = Reward(round_id, WAD, tuple("0x" + p.hex() for p in tree.proof(org.address)), claimed=False)
    opens = claimable_at(w3, deployments, round_id)
    org.claims.clock = lambda: float(opens + 10)
    nonce = w3.eth.get_transaction_count(org.address)
    with pytest.raises(RewardNotClaimableYetError) as caught:
        org.claim_reward(reward)
    assert caught.value.claimable_at == opens and 0 < caught.value.seconds_left <= WINDOW
    assert not isinstance(caught.value, TransactionFailedError)
    assert w3.eth.get_transaction_count(org.address) == nonce


def test_claiming_everything_skips_and_reports_rounds_in_their_window(
    live_api: str,  # noqa: F811
    settings: Settings,
    client: TestClient,
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
) -> None:
    index = CLIENT_ORGS[2]
    org: Organization = make_org(index)
    token = deployments.contract(w3, "RewardToken")
    balance = token.functions.balanceOf(org.address).call()
    rewards = {org.address: 2 * WAD}
    ripe, ripe_tree = recorded_round(w3, deployments, rewards)
    pass_the_window(w3)
    pending, pending_tree = recorded_round(w3, deployments, {org.address: 5 * WAD})
    posted_in_database(settings, ripe, ripe_tree, rewards)
    posted_in_database(settings, pending, pending_tree, {org.address: 5 * WAD})

    results = {r.round_id: r for r in org.claim_rewards()}
    assert results[ripe].status == "claimed" and results[ripe].tx_hash
    skipped = results[pending]
    assert skipped.status == "not_claimable_yet" and skipped.tx_hash is None
    assert skipped.claimable_at == claimable_at(w3, deployments, pending)
    assert skipped.seconds_left is not None and WINDOW - 60 <= skipped.seconds_left <= WINDOW
    assert skipped.detail and "dispute window" in skipped.detail
    assert token.functions.balanceOf(org.address).call() - balance == 2 * WAD

    # The CLI: claiming everything reports the pending round and succeeds.
    rpc = str(w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    everything = cli("claim", "--api", live_api, "--rpc", rpc, index=index)
    assert everything.exit_code == 0, everything.output
    assert f"round {ripe}: 2 tokens already claimed" in everything.stdout
    assert f"round {pending}: 5 tokens not claimable yet: round {pending}'s reward" in everything.stdout
    as_json = cli("claim", "--api", live_api, "--rpc", rpc, "--json", index=index)
    assert as_json.exit_code == 0, as_json.output
    statuses = {r["round_id"]: r for r in json.loads(as_json.stdout)}
    assert statuses[pending]["status"] == "not_claimable_yet"
    assert statuses[pending]["claimable_at"] == skipped.claimable_at

    # Naming the round: the message, exit status 1, no traceback.
    named = cli("claim", "--api", live_api, "--rpc", rpc, "--round", str(pending), index=index)
    assert named.exit_code == 1, named.output
    assert re.search(
        rf"error: round {pending}'s reward is still in its dispute window: it becomes claimable at "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ s, about \d+ min\); claim it again after that time",
        named.stderr,
    ), named.stderr
    assert isinstance(named.exception, SystemExit) and "Traceback" not in named.output

    pass_the_window(w3)
    after = cli("claim", "--api", live_api, "--rpc", rpc, "--round", str(pending), index=index)
    assert after.exit_code == 0, after.output
    assert f"round {pending}: claimed 5 tokens" in after.stdout
    assert token.functions.balanceOf(org.address).call() - balance == 7 * WAD


def test_a_cancelled_round_says_so_and_sends_nothing(
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
) -> None:
    """Inside the window and after it: a cancelled round is never "claim again later" nor a reverted claim."""
    org: Organization = make_org(CLIENT_ORGS[3])
    round_id, tree = recorded_round(w3, deployments, {org.address: 4 * WAD})
    cancel(w3, deployments, round_id)
    reward = Reward(round_id, 4 * WAD, tuple("0x" + p.hex() for p in tree.proof(org.address)), claimed=False)
    nonce = w3.eth.get_transaction_count(org.address)
    for _ in ("inside the window", "after it"):
        with pytest.raises(RewardsCancelledError) as caught:
            org.claim_reward(reward)
        error = caught.value
        assert error.round_id == round_id and error.code == "rewards_cancelled"
        assert not isinstance(error, (TransactionFailedError, RewardNotClaimableYetError))
        assert str(error).startswith(
            f"round {round_id}'s rewards were cancelled in the dispute window (by governance or a guardian): "
            "nothing can be claimed for this round"
        )
        assert w3.eth.get_transaction_count(org.address) == nonce
        pass_the_window(w3)


def test_a_cancellation_between_the_check_and_the_send_is_the_same_typed_error(
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guardian cancels right after the SDK read the round (not cancelled then): the contract's revert
    (RewardsAreCancelled, found by the simulation before anything is sent) becomes RewardsCancelledError."""
    org: Organization = make_org(CLIENT_ORGS[4])
    round_id, tree = recorded_round(w3, deployments, {org.address: WAD})
    reward = Reward(round_id, WAD, tuple("0x" + p.hex() for p in tree.proof(org.address)), claimed=False)
    org.claims.clock = lambda: float(claimable_at(w3, deployments, round_id) + 10)  # window over, it thinks
    reader = org.chain.reader
    read = reader.round_rewards

    def read_then_cancel(rid: int) -> RoundRewards:
        record = read(rid)
        cancel(w3, deployments, rid)
        return record

    monkeypatch.setattr(reader, "round_rewards", read_then_cancel)
    nonce = w3.eth.get_transaction_count(org.address)
    with pytest.raises(RewardsCancelledError) as caught:
        org.claim_reward(reward)
    assert caught.value.round_id == round_id
    assert w3.eth.get_transaction_count(org.address) == nonce


def test_claiming_everything_reports_cancelled_rounds_and_claims_the_others(
    live_api: str,  # noqa: F811
    settings: Settings,
    client: TestClient,
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
) -> None:
    """A cancelled round before a claimable one: claiming everything used to stop at its reverted claim."""
    index = CLIENT_ORGS[3]
    org: Organization = make_org(index)
    token = deployments.contract(w3, "RewardToken")
    balance = token.functions.balanceOf(org.address).call()
    cancelled, cancelled_tree = recorded_round(w3, deployments, {org.address: 4 * WAD})
    cancel(w3, deployments, cancelled)
    ripe, ripe_tree = recorded_round(w3, deployments, {org.address: 2 * WAD})
    pass_the_window(w3)
    pending, pending_tree = recorded_round(w3, deployments, {org.address: 5 * WAD})
    posted_in_database(settings, cancelled, cancelled_tree, {org.address: 4 * WAD})
    posted_in_database(settings, ripe, ripe_tree, {org.address: 2 * WAD})
    posted_in_database(settings, pending, pending_tree, {org.address: 5 * WAD})
    rpc = str(w3.provider.endpoint_uri)  # type: ignore[attr-defined]

    # The CLI, claiming everything: the cancelled round is reported, the ripe one claimed, exit 0.
    everything = cli("claim", "--api", live_api, "--rpc", rpc, index=index)
    assert everything.exit_code == 0, everything.output
    assert (
        f"round {cancelled}: 4 tokens cancelled: round {cancelled}'s rewards were cancelled in the dispute "
        "window" in everything.stdout
    )
    assert f"round {ripe}: claimed 2 tokens" in everything.stdout
    assert f"round {pending}: 5 tokens not claimable yet" in everything.stdout
    assert token.functions.balanceOf(org.address).call() - balance == 2 * WAD

    # The SDK: the same report, typed.
    results = {r.round_id: r for r in org.claim_rewards()}
    assert results[cancelled].status == "cancelled" and results[cancelled].tx_hash is None
    assert results[cancelled].detail and "nothing can be claimed" in results[cancelled].detail
    assert results[ripe].status == "already_claimed"
    assert results[pending].status == "not_claimable_yet"
    as_json = cli("claim", "--api", live_api, "--rpc", rpc, "--json", index=index)
    assert as_json.exit_code == 0, as_json.output
    assert {r["round_id"]: r["status"] for r in json.loads(as_json.stdout)}[cancelled] == "cancelled"

    # Naming the cancelled round: the message, exit status 1, no traceback; even once every window is over.
    pass_the_window(w3)
    named = cli("claim", "--api", live_api, "--rpc", rpc, "--round", str(cancelled), index=index)
    assert named.exit_code == 1, named.output
    assert (
        f"error: round {cancelled}'s rewards were cancelled in the dispute window (by governance or a "
        "guardian): nothing can be claimed for this round" in named.stderr
    ), named.stderr
    assert isinstance(named.exception, SystemExit) and "Traceback" not in named.output
    results = {r.round_id: r for r in org.claim_rewards()}
    assert results[cancelled].status == "cancelled" and results[pending].status == "claimed"
    assert token.functions.balanceOf(org.address).call() - balance == 7 * WAD
