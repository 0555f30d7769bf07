"""Differential privacy in the secure-aggregation mode on the live stack (API, Celery worker, Hardhat
governance, PostgreSQL, Redis): the group range holds the members' noise, the SDK adds each member's share
before masking, the worker charges the round at its worst group's multiplier, and a round that fails after
unmasking some groups is charged for their release, which the next round's accounting counts."""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from client.data import Dataset
from client.sdk import Organization
from client.secure import SecureRound
from client.wallet import Wallet
from db.base import utcnow
from db.models import Aggregation, SecAggGroup, SecAggMessage, SecAggRound
from db.session import session_factory
from fedledger.api.client import NO_RETRY, FedLedgerApi
from fedledger.devkeys import dev_private_key
from fedledger.domain.blob_backends import open_blob_store
from fedledger.domain.blobstore import BlobNotFound
from fedledger.domain.secagg import sweep_vectors
from fedledger.privacy import epsilon_after, epsilon_of
from fedledger.secagg.noise import MemberNoise, noise_evident
from fedledger.secagg.quantize import Quantizer
from tests.worker.conftest import ORGS, Platform, address_of
from tests.worker.secure_kit import Members, drive, govern, groups_of, mine, small_update

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


def test_a_secure_round_with_dp_widens_its_range_to_hold_the_members_noise(platform: Platform) -> None:
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    round_ = platform.open_round(duration=600, quorum=3, cohort=ORGS[:3])
    view = Members(platform, round_["id"], ORGS[:1]).view(ORGS[0])
    # Genesis DP settings (clip 1, multiplier 1), groups of 3 at threshold 2: each member adds std 1/sqrt(2).
    noise = MemberNoise.for_group(1.0, 1.0, 3, 2)
    assert view["clip"] == pytest.approx(noise.required_range(view["dimension"]))
    noise.check_fits(Quantizer(view["clip"], 3), view["dimension"])


@pytest.mark.celery
def test_the_sdk_noises_before_masking_and_the_worker_charges_the_worst_group(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    trio = ORGS[:3]
    round_ = platform.open_round(duration=600, quorum=3, cohort=trio)
    orgs = {
        i: Organization(Wallet(dev_private_key(i)), http=platform.client, w3=platform.w3, poll_interval=0.3)
        for i in trio
    }
    errors: dict[int, BaseException] = {}

    def take_part(i: int) -> None:
        X, y = platform.partitions[i]
        try:
            orgs[i].participate(Dataset(X.astype(np.float32), y), seed=i, timeout=240)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors[i] = exc

    threads = [threading.Thread(target=take_part, args=(i,)) for i in trio]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        mine(platform)  # the groups are drawn from the chain's next block
        time.sleep(1.0)
    for t in threads:
        t.join(timeout=5)
    assert errors == {}, errors
    final = platform.wait_for(round_["id"], {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "POSTED", final
    engine = sa.create_engine(platform.settings.resolved_database_url)
    with engine.connect() as connection:
        aggregation: Any = connection.execute(
            sa.select(Aggregation).where(Aggregation.round_id == round_["id"])
        ).one()
        group: Any = connection.execute(
            sa.select(SecAggGroup).where(SecAggGroup.round_id == round_["id"])
        ).one()
    engine.dispose()
    # One group of 3 at threshold 2, no dropout: z sqrt(3/2), the only DP round so far.
    worst = math.sqrt(3 / 2)
    assert aggregation.params["dp_mode"] == "distributed"
    assert aggregation.params["dp_effective_noise_multiplier"] == pytest.approx(worst)
    assert aggregation.epsilon_spent == pytest.approx(epsilon_after(worst, 1.0, 1, 1e-5))
    assert aggregation.dp_noise_std == pytest.approx(worst / 3)
    # What the server learned of the group carries the members' noise (far above three clipped updates).
    blobs = open_blob_store(platform.settings)
    mean = np.frombuffer(blobs.get(group.mean_hash), dtype="<f4")
    noise = MemberNoise.for_group(1.0, 1.0, 3, 2)
    assert noise_evident(mean, 3, noise)
    # Noise of std sqrt(3/2) / 3 = 0.41 per coordinate over 650: a norm near 10, against at most 1 without.
    assert float(np.linalg.norm(mean)) > 5.0
    for org in orgs.values():
        org.close()


def _members(platform: Platform, round_id: int, indices: tuple[int, ...]) -> dict[int, SecureRound]:
    """Members of a secure round with small updates of their own (the SDK's steps, driven one at a time)."""
    dimension = sum(v.size for v in platform.global_weights().values())
    members = {}
    for i in indices:
        api = FedLedgerApi(
            http=platform.client, wallet=Wallet(dev_private_key(i)), retry=NO_RETRY, siwe_domain="testserver"
        )
        members[i] = SecureRound(
            api, round_id, address_of(i), dev_private_key(i), small_update(dimension, i), 50
        )
    return members


@pytest.mark.celery
def test_a_dp_round_that_fails_after_unmasking_a_group_is_charged_and_the_next_round_counts_it(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    six = ORGS[:6]
    failing = platform.open_round(duration=600, quorum=6, cohort=six)
    rid = failing["id"]
    members = _members(platform, rid, six)
    for m in members.values():
        m.step()  # join
    mine(platform)
    groups = groups_of(members)
    assert sorted(len(g) for g in groups.values()) == [3, 3]
    # Every member masks, so both groups could be unmasked and the budget check lets the close unmask; then
    # group 1's members never reveal: group 0's noised sum is unmasked (released), group 1's cannot be, and
    # 3 members are counted where the round needs 6.
    assert drive(members, {i: {"join", "keys", "shares", "masked"} for i in groups[1]}) == {}
    # The operator ends the unmask phase now rather than at its deadline.
    closed = platform.client.post(f"/v1/rounds/{rid}/close", headers=platform.operator)
    assert closed.status_code == 200, closed.text
    final = platform.wait_for(rid, {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "FAILED", final
    assert "3 updates were unmasked in 1 groups, fewer than the 6" in final["failure_reason"]
    assert "charged to the privacy accountant" in final["failure_reason"]

    engine = sa.create_engine(platform.settings.resolved_database_url)
    try:
        with engine.connect() as connection:
            state: Any = connection.execute(sa.select(SecAggRound).where(SecAggRound.round_id == rid)).one()
            stored = {
                g.group_index: g
                for g in connection.execute(sa.select(SecAggGroup).where(SecAggGroup.round_id == rid))
            }
            assert (
                connection.execute(sa.select(Aggregation).where(Aggregation.round_id == rid)).first() is None
            )
        # Charged exactly as release_charge prices group 0's release: 3 survivors at threshold 2, the only
        # DP round so far.
        released = math.sqrt(3 / 2)
        assert stored[0].mean_hash is not None and stored[0].failure_reason is None
        assert stored[1].mean_hash is None and "TooManyDropouts" in stored[1].failure_reason
        assert state.dp_charge["dp_effective_noise_multiplier"] == pytest.approx(released)
        assert state.dp_charge["dp_worst_group_survivors"] == 3
        assert state.epsilon_spent == pytest.approx(epsilon_after(released, 1.0, 1, 1e-5))
        assert state.dp_noise_std == pytest.approx(released / 3)
        # Everyone reads the charge with the round's groups.
        public = platform.client.get(f"/v1/rounds/{rid}/secagg/groups").json()
        assert public["charged_on_failure"] is True
        assert public["epsilon_spent"] == pytest.approx(state.epsilon_spent)
        assert [g["status"] for g in public["groups"]] == ["unmasked", "failed"]
        history = {r["id"]: r for r in platform.client.get("/v1/stats/rounds").json()}
        assert history[rid]["aggregation"] is None
        assert history[rid]["epsilon_spent"] == pytest.approx(state.epsilon_spent)

        # The next round's budget check starts from the failed round's charge: composed with it (at the
        # governed multiplier, as every earlier round is), not from zero.
        trio = tuple(groups[0])
        following = platform.open_round(duration=600, quorum=3, cohort=trio)
        nxt = _members(platform, following["id"], trio)
        for m in nxt.values():
            m.step()
        mine(platform)
        assert drive(nxt, {}) == {}
        final = platform.wait_for(following["id"], {"POSTED", "FAILED"}, timeout=180)
        assert final["status"] == "POSTED", final
        with engine.connect() as connection:
            aggregation: Any = connection.execute(
                sa.select(Aggregation).where(Aggregation.round_id == following["id"])
            ).one()
        worst = aggregation.params["dp_effective_noise_multiplier"]
        assert worst == pytest.approx(released)
        assert aggregation.epsilon_spent == pytest.approx(epsilon_of([(1.0, 1), (worst, 1)], 1.0, 1e-5))
        assert aggregation.epsilon_spent > epsilon_after(worst, 1.0, 1, 1e-5) + 0.1
        history = {r["id"]: r for r in platform.client.get("/v1/stats/rounds").json()}
        assert history[following["id"]]["epsilon_spent"] == pytest.approx(aggregation.epsilon_spent)

        # The beat's sweep, once the failed round is past the grace period: its masked vectors go (nothing will
        # unmask group 1's; group 0's sum is its stored mean), the posted round's stay, and so do the means.
        blobs = open_blob_store(platform.settings)
        sessions = session_factory(platform.settings.resolved_database_url)
        with engine.connect() as connection:
            masked = connection.execute(
                sa.select(SecAggMessage.round_id, SecAggMessage.blob_hash).where(
                    SecAggMessage.blob_hash.is_not(None)
                )
            ).all()
        failed_vectors = sorted(h for r, h in masked if r == rid)
        assert len(failed_vectors) == 6 and any(r == following["id"] for r, _ in masked)
        later = utcnow() + timedelta(seconds=2 * platform.settings.close_lease_seconds)
        assert (
            sorted(sweep_vectors(sessions, blobs, platform.settings.close_lease_seconds, later))
            == failed_vectors
        )
        for digest in failed_vectors:
            with pytest.raises(BlobNotFound):
                blobs.get(digest)
        assert all(blobs.get(h) for r, h in masked if r != rid)
        assert blobs.get(stored[0].mean_hash)
        assert platform.client.get(f"/v1/rounds/{rid}/secagg/groups").json() == public
    finally:
        engine.dispose()
