"""Whole rounds through the real API, a real Celery worker, PostgreSQL, Redis and a Hardhat node."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from db.models import ChainTransaction, Contribution
from db.session import session_factory
from fedledger.chain.tx import send_transaction
from fedledger.datasets import digits_split
from fedledger.devkeys import dev_private_key
from fedledger.models import evaluate
from tests.worker.conftest import ORGS, Platform, address_of, login

pytestmark = [pytest.mark.celery, pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


def holdout_accuracy(weights) -> float:  # type: ignore[no-untyped-def]
    _, _, X, y = digits_split()
    return evaluate(weights, X, y)[1]


def test_a_round_with_a_byzantine_participant_ends_on_chain_and_pays_the_honest(
    platform: Platform, worker
) -> None:  # type: ignore[no-untyped-def]
    before = holdout_accuracy(platform.global_weights())
    round_ = platform.open_round(quorum=5, cohort=ORGS[:5])
    honest, attacker = ORGS[:4], ORGS[4]
    for index in honest:
        platform.submit(index, round_)
    platform.submit(attacker, round_, attack="scaling")
    posted = platform.wait_for(round_["id"], {"POSTED", "FAILED"})
    assert posted["status"] == "POSTED", posted

    model = platform.client.get("/v1/models/current").json()
    assert model["produced_by_round"] == round_["id"]
    ledger = platform.deployments.contract(platform.w3, "ContributionLedger")
    assert ledger.functions.modelHashOf(round_["id"]).call().hex() == model["weights_hash"]
    assert holdout_accuracy(platform.global_weights()) > before + 0.3

    scores = {
        c["participant"]: c
        for c in platform.client.get(f"/v1/stats/contributions?round_id={round_['id']}").json()
    }
    assert scores[address_of(attacker)]["honesty"] < 50 and scores[address_of(attacker)]["byzantine"]
    assert all(
        scores[address_of(i)]["honesty"] == 100 and not scores[address_of(i)]["byzantine"] for i in honest
    )

    token = platform.deployments.contract(platform.w3, "RewardToken")
    distributor = platform.deployments.contract(platform.w3, "RewardDistributor")
    for index in honest:
        rewards = platform.client.get(
            f"/v1/rewards/{address_of(index)}", headers=login(platform.client, index)
        ).json()["rewards"]
        assert [r["round_id"] for r in rewards] == [round_["id"]] and rewards[0]["claimed"] is False
        balance = token.functions.balanceOf(address_of(index)).call()
        amount = int(rewards[0]["amount_wei"])
        send_transaction(
            platform.w3,
            distributor.functions.claim(
                round_["id"], address_of(index), amount, [bytes.fromhex(p[2:]) for p in rewards[0]["proof"]]
            ),
            dev_private_key(index),
        )
        assert token.functions.balanceOf(address_of(index)).call() == balance + amount
    served = platform.client.get(
        f"/v1/rewards/{address_of(attacker)}", headers=login(platform.client, attacker)
    )
    assert served.json() == {"rewards": [], "next_cursor": None}


def test_a_close_abandoned_mid_way_is_taken_over_and_posted_once(
    platform: Platform, worker, settings
) -> None:  # type: ignore[no-untyped-def]
    """A worker that took the round and died (its lease is left behind) does not block it; and the chain
    writes of a post killed before its transaction was mined are completed, not repeated."""
    worker.kill()
    round_ = platform.open_round(duration=10, quorum=5)
    for index in ORGS[:5]:
        platform.submit(index, round_)
    from aggregator.worker.close import acquire

    sessions = session_factory(settings.resolved_database_url)
    # Five of the ten organizations: the round is due at its deadline, not before.
    assert not acquire(sessions, round_["id"], "a-worker-that-died", lease_seconds=3)
    time.sleep(
        max(0.0, (datetime.fromisoformat(round_["deadline"]) - datetime.now(UTC)).total_seconds()) + 0.5
    )
    assert acquire(sessions, round_["id"], "a-worker-that-died", lease_seconds=3)
    # Stop mining: the restarted worker will close the round, sign and broadcast the post's first write
    # (markActive, before recordRound), and hang waiting for its receipt; then it is killed too.
    platform.w3.provider.make_request("evm_setAutomine", [False])
    worker.start()
    deadline = __import__("time").monotonic() + 60
    while __import__("time").monotonic() < deadline:
        with sessions() as session:
            if session.scalars(
                select(ChainTransaction).where(ChainTransaction.purpose == f"round:{round_['id']}:active")
            ).first():
                break
        __import__("time").sleep(0.2)
    else:
        raise AssertionError("the worker never signed markActive")
    worker.kill()
    platform.w3.provider.make_request("evm_setAutomine", [True])
    platform.w3.provider.make_request("evm_mine", [])
    worker.start()
    assert platform.wait_for(round_["id"], {"POSTED", "FAILED"})["status"] == "POSTED"
    ledger = platform.deployments.contract(platform.w3, "ContributionLedger")
    assert ledger.functions.roundsRecorded().call() == 1
    events = ledger.events.RoundRecorded.get_logs(from_block=0)
    assert [e["args"]["roundId"] for e in events] == [round_["id"]]
    with sessions() as session:
        assert (
            session.scalar(select(Contribution).where(Contribution.round_id == round_["id"]).limit(1))
            is not None
        )
        assert (
            len(session.scalars(select(Contribution).where(Contribution.round_id == round_["id"])).all()) == 5
        )


def test_repeated_byzantine_behaviour_is_slashed_on_chain_and_nobody_else_is(
    platform: Platform, worker
) -> None:  # type: ignore[no-untyped-def]
    registry = platform.deployments.contract(platform.w3, "ParticipantRegistry")
    attacker = ORGS[5]
    honest = ORGS[6:10]
    stake_before = registry.functions.stakeOf(address_of(attacker)).call()
    threshold = 3  # the governed byzantine_threshold on a fresh deployment
    slashed_after = None
    for r in range(threshold):
        round_ = platform.open_round(quorum=5, cohort=ORGS[5:10])
        for index in honest:
            platform.submit(index, round_, seed=r)
        platform.submit(attacker, round_, attack="scaling", seed=r)
        assert platform.wait_for(round_["id"], {"POSTED", "FAILED"})["status"] == "POSTED"
        if registry.functions.participantOf(address_of(attacker)).call()[-1] == 3:  # Status.Slashed
            slashed_after = r + 1
            break
    # Honesty 0 is below the governed slash_honesty_below (50), so the first detection already slashes;
    # the Byzantine-count threshold (3) is the backstop for subtler attackers.
    assert slashed_after is not None and slashed_after <= threshold
    assert registry.functions.stakeOf(address_of(attacker)).call() < stake_before
    assert registry.functions.participantOf(address_of(attacker)).call()[3] >= 1  # byzantineCount on-chain
    for index in honest:
        assert registry.functions.isActive(address_of(index)).call()
    slashed = [e["args"]["participant"] for e in registry.events.Slashed.get_logs(from_block=0)]
    assert set(slashed) == {address_of(attacker)}
    # A slashed participant can no longer submit.
    round_ = platform.open_round(quorum=4)
    refused = platform.client.post(
        f"/v1/rounds/{round_['id']}/updates",
        content=b"x",
        headers={**login(platform.client, attacker), "X-Update-Signature": "0x00"},
    )
    assert refused.status_code == 403 and refused.json()["error"] == "participant_slashed"


def test_an_inflated_sample_claim_is_capped_and_the_signflip_flagged(platform: Platform, worker) -> None:  # type: ignore[no-untyped-def]
    """Issue 13.10 end to end: 1e9 claimed samples with a sign-flipped update. The claim only loses weight
    (a cap relative to the round's median claim, which other wallets move, is never evidence); the update's
    direction is what flags it."""
    before = holdout_accuracy(platform.global_weights())
    round_ = platform.open_round(quorum=5, cohort=ORGS[:5])
    honest, attacker = ORGS[:4], ORGS[4]
    for index in honest:
        platform.submit(index, round_)
    platform.submit(attacker, round_, attack="signflip", num_samples=10**9)
    posted = platform.wait_for(round_["id"], {"POSTED", "FAILED"})
    assert posted["status"] == "POSTED", posted
    assert platform.client.get("/v1/models/current").json()["produced_by_round"] == round_["id"]
    assert holdout_accuracy(platform.global_weights()) > before

    scores = {
        c["participant"]: c
        for c in platform.client.get(f"/v1/stats/contributions?round_id={round_['id']}").json()
    }
    cheat = scores[address_of(attacker)]
    assert cheat["byzantine"] and not cheat["kept"] and cheat["reward_wei"] == "0"
    # Codes with what was measured beside them (the claim above the cap only stops counting: no evidence).
    assert [e["code"] for e in cheat["evidence"]][:1] == ["direction_outlier"], cheat["evidence"]
    assert "cosine" in cheat["evidence"][0]["detail"]
    assert "flagged as Byzantine" in cheat["excluded_reason"]
    assert all(
        not scores[address_of(i)]["evidence"] and not scores[address_of(i)]["byzantine"] for i in honest
    )


def test_an_excluded_update_is_paid_for_what_it_would_have_added_and_told_why(
    platform: Platform, worker
) -> None:  # type: ignore[no-untyped-def]
    """Issue 22.2: an update the rule leaves out of the aggregate (kept: false) without any evidence against it
    was paid at fitness 100 / honesty 100 whatever it was worth; then it was paid nothing. Issue 20: paying
    only the kept updates paid copies of the mean (which the guarded gate always keeps) above honest
    organizations whose data is unlike their peers'. An update left out is now scored by what it would have
    added with the share it would have had, and paid for that when it is positive (one that would have
    added nothing is not paid: tests/aggregator/test_novelty.py). This one is an honest update turned
    slightly away from the server's reference: its own information (orthogonal to the reference) would
    have helped, so it is paid, and told why it was left out."""
    round_ = platform.open_round(quorum=5, cohort=ORGS[:5])
    honest, excluded = ORGS[:4], ORGS[4]
    for index in honest:
        platform.submit(index, round_)
    platform.submit(excluded, round_, attack="misaligned")
    posted = platform.wait_for(round_["id"], {"POSTED", "FAILED"})
    assert posted["status"] == "POSTED", posted

    scores = {
        c["participant"]: c
        for c in platform.client.get(f"/v1/stats/contributions?round_id={round_['id']}").json()
    }
    left_out = scores[address_of(excluded)]
    assert not left_out["kept"] and not left_out["byzantine"] and not left_out["evidence"], left_out
    assert left_out["quality"] > 0 and int(left_out["reward_wei"]) > 0, left_out
    assert "fltrust_guarded rule left the update out of the aggregate" in left_out["excluded_reason"], (
        left_out
    )
    for index in honest:
        kept = scores[address_of(index)]
        assert kept["kept"] and int(kept["reward_wei"]) > 0 and kept["excluded_reason"] is None, kept
    rewards = platform.client.get(
        f"/v1/rewards/{address_of(excluded)}", headers=login(platform.client, excluded)
    ).json()["rewards"]
    assert any(r["round_id"] == round_["id"] for r in rewards), rewards


def test_wallets_racing_to_the_quorum_at_the_opening_do_not_close_the_round(
    platform: Platform, worker
) -> None:  # type: ignore[no-untyped-def]
    """Issue 20, the race to quorum: three wallets submit at the opening barely trained, reaching the
    governed quorum (3) first (before: the round closed on them, every round). The round stays open until
    every active organization has submitted, then closes at once (long before its deadline) with the
    honest organizations aggregated and paid; arriving first earns no timeliness."""
    started = time.monotonic()
    while b"ready." not in worker.log.read_bytes():  # the race is against a running worker
        assert time.monotonic() - started < 120, "the worker did not start"
        time.sleep(0.3)
    round_ = platform.open_round(duration=300, quorum=None)
    assert round_["quorum"] == 3  # the governed default
    racers, honest = ORGS[:3], ORGS[3:]
    for index in racers:
        platform.submit(index, round_, attack="lazy")
    time.sleep(6 * platform.settings.tick_seconds)  # the beat has looked at the round several times
    state = platform.client.get(f"/v1/rounds/{round_['id']}").json()
    # Before: closed on the racers (or extended, its deadline moved, when their updates were unusable).
    assert state["status"] == "OPEN" and state["extensions"] == 0, state
    for index in honest[:-1]:
        platform.submit(index, round_)
    time.sleep(2 * platform.settings.tick_seconds)
    assert platform.client.get(f"/v1/rounds/{round_['id']}").json()["status"] == "OPEN"
    platform.submit(honest[-1], round_)  # the last active organization: the round closes now
    posted = platform.wait_for(round_["id"], {"POSTED", "FAILED"}, timeout=120)
    assert posted["status"] == "POSTED", posted
    assert datetime.fromisoformat(posted["closed_at"]) < datetime.fromisoformat(round_["deadline"])

    scores = {
        c["participant"]: c
        for c in platform.client.get(f"/v1/stats/contributions?round_id={round_['id']}").json()
    }
    assert set(scores) == {address_of(i) for i in ORGS}
    paid_honest = [int(scores[address_of(i)]["reward_wei"]) for i in honest]
    assert sum(paid_honest) > 0 and all(scores[address_of(i)]["kept"] for i in honest)
    assert (
        max(int(scores[address_of(i)]["reward_wei"]) for i in racers) <= sorted(paid_honest)[len(honest) // 2]
    )
