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

import json
import re
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web3 import Web3

from client.errors import RewardNotClaimableYetError, RewardsCancelledError, TransactionFailedError
from client.sdk import Organization, Reward
from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.chain.reader import RoundRewards
from fedledger.config import Settings
from tests.chain import dispute
from tests.chain.dispute import (
    WINDOW,
    cancel,
    claimable_at,
    pass_the_window,
    posted_in_database,
    recorded_round,
)
from tests.client.conftest import CLIENT_ORGS
from tests.client.test_cli import cli, live_api  # noqa: F401 - the live API fixture, on this module's chain

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

# This module's own chain (one-hour window, a guardian) replaces the session's for every fixture built on it.
dev_chain, w3, deployments, deployments_file = (
    dispute.dev_chain,
    dispute.w3,
    dispute.deployments,
    dispute.deployments_file,
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


def test_the_run_loop_reports_a_cancelled_round_once_and_claims_the_others(
    settings: Settings,
    client: TestClient,
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis,  # type: ignore[no-untyped-def]
) -> None:
    """``run`` claims after a posted round it took part in: the cancelled round is an event of its own."""
    org: Organization = make_org(CLIENT_ORGS[0])
    cancelled, cancelled_tree = recorded_round(w3, deployments, {org.address: 4 * WAD})
    cancel(w3, deployments, cancelled)
    ripe, ripe_tree = recorded_round(w3, deployments, {org.address: 2 * WAD})
    pass_the_window(w3)
    posted_in_database(settings, cancelled, cancelled_tree, {org.address: 4 * WAD})
    posted_in_database(settings, ripe, ripe_tree, {org.address: 2 * WAD})
    org.participation.submitted_rounds.add(ripe)  # as if it had submitted to the round now posted
    events: list[tuple[str, dict[str, Any]]] = []
    stop = threading.Event()

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        events.append((kind, payload))
        if kind == "claimed":
            stop.set()

    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        org.run(None, stop=stop, on_event=on_event)
    finally:
        timer.cancel()
    assert [(kind, p["round_id"]) for kind, p in events] == [
        ("claim_cancelled", cancelled),
        ("claimed", ripe),
    ]
    assert events[0][1]["status"] == "cancelled" and "nothing can be claimed" in events[0][1]["detail"]
