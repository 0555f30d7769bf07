"""A secure-aggregation round end to end on the live stack (issue 24): API, Celery worker, Hardhat,
PostgreSQL, Redis. Twelve organizations take part through the SDK's :class:`client.secure.SecureRound`;
one drops out after its keys, one after its shares, two send poisoned updates. The close unmasks each
group, the round is computed over group means and its rewards are posted; nothing the server stores lets
it recover one organization's update."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import sqlalchemy as sa

from aggregator.worker import tasks
from client.data import Dataset
from client.sdk import Organization
from client.secure import SecureRound
from client.wallet import Wallet
from db.models import (
    Aggregation,
    AuditEntry,
    Contribution,
    Participant,
    SecAggGroup,
    SecAggMessage,
    SecAggStep,
    Update,
    UpdateStatus,
)
from fedledger.api.client import NO_RETRY, FedLedgerApi
from fedledger.config import Settings
from fedledger.datasets import digits_split
from fedledger.devkeys import dev_private_key
from fedledger.domain.blob_backends import open_blob_store
from fedledger.models import train_softmax
from fedledger.payload import flatten
from fedledger.secagg import wire
from fedledger.secagg.noise import MemberNoise
from fedledger.secagg.quantize import Quantizer
from tests.worker.conftest import ORGS, Platform, address_of, ensure_enrolled, login
from tests.worker.secure_kit import drive, govern, groups_of, mine

pytestmark = [pytest.mark.celery, pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

EXTRA = (13, 14)
TWELVE = (*ORGS, *EXTRA)
STEP_SECONDS = 15


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Short phases: the two dropouts hold their phases until the deadline.
    return settings.model_copy(update={"secagg_step_seconds": STEP_SECONDS, "secagg_join_seconds": 60})


@pytest.fixture
def twelve(platform: Platform) -> Iterator[Platform]:
    for index in EXTRA:
        ensure_enrolled(platform.w3, platform.deployments, index)
        response = platform.client.post(
            "/v1/participants", json={"org_name": f"org {index}"}, headers=login(platform.client, index)
        )
        assert response.status_code == 200, response.text
        # Data of their own (halves of the digits test split): no two organizations train on the same examples.
        _, _, X_test, y_test = digits_split()
        half = np.array_split(np.arange(len(y_test)), len(EXTRA))[EXTRA.index(index)]
        platform.partitions[index] = (X_test[half], y_test[half])
    yield platform


def trained_update(platform: Platform, index: int, spec: dict[str, Any]) -> tuple[np.ndarray, int]:
    weights = platform.global_weights()
    X, y = platform.partitions[index]
    local = train_softmax(weights, X, y, epochs=2, lr=0.5, batch=32, rng=np.random.default_rng(index))
    return flatten({k: local[k] - weights[k] for k in weights}, spec), len(y)


def test_a_secure_round_with_dropouts_and_poison_is_aggregated_paid_and_private(
    twelve: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    platform = twelve
    govern(platform, "secure_group_size", 3)
    round_ = platform.open_round(duration=600, quorum=6, cohort=TWELVE)
    rid = round_["id"]
    assert round_["params"]["secure_group_size"] == 3
    spec = dict(sorted({k: v.shape for k, v in platform.global_weights().items()}.items()))
    apis = {
        i: FedLedgerApi(
            http=platform.client, wallet=Wallet(dev_private_key(i)), retry=NO_RETRY, siwe_domain="testserver"
        )
        for i in TWELVE
    }
    updates: dict[int, np.ndarray] = {}
    claims: dict[int, int] = {}
    for i in TWELVE:
        updates[i], claims[i] = trained_update(platform, i, spec)
    members = {
        i: SecureRound(apis[i], rid, address_of(i), dev_private_key(i), updates[i], claims[i]) for i in TWELVE
    }

    # Join; the groups are drawn once the next block is mined.
    for i in TWELVE:
        assert members[i].step() is False
    mine(platform)
    views = {i: apis[i].secagg(rid) for i in TWELVE}
    assert {v.phase for v in views.values()} == {"keys"}
    groups: dict[int, list[int]] = {}
    for i, v in views.items():
        assert v.group is not None
        groups.setdefault(v.group.index, []).append(i)
    assert sorted(len(g) for g in groups.values()) == [3, 3, 3, 3]
    # Roles chosen once the groups are known: one dropout in each of groups 0 and 1, both poisoners in group 3.
    after_keys, after_shares = groups[0][0], groups[1][0]
    poisoners = groups[3][:2]
    for p in poisoners:
        members[p].update = (-10 * updates[p]).astype(np.float32)
        updates[p] = members[p].update
    stops = {after_keys: {"join", "keys"}, after_shares: {"join", "keys", "shares"}}

    assert drive(members, stops) == {}
    assert members[after_keys].receipt is None and members[after_shares].receipt is None

    final = platform.wait_for(rid, {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "POSTED", final

    engine = sa.create_engine(platform.settings.database_url)
    try:
        with engine.connect() as conn:
            _check_aggregate(platform, conn, rid, groups, updates, claims, {after_keys, after_shares})
            _check_nothing_stored_reveals_an_update(platform, conn, rid, updates, {after_keys, after_shares})
            public = check_public_groups(platform, conn, rid)
    finally:
        engine.dispose()
    # What everyone sees: the dropouts counted in their groups, the poisoned group flagged and unpaid.
    outcome = {
        g["index"]: (g["status"], g["survivors"], g["dropped"], g["kept"], g["flagged"])
        for g in public["groups"]
    }
    assert outcome[0][:3] == outcome[1][:3] == ("unmasked", 2, 1)
    assert outcome[3][:4] == ("unmasked", 3, 0, False)
    assert int(next(g for g in public["groups"] if g["index"] == 3)["reward_wei"]) == 0


def test_a_group_with_too_many_dropouts_is_left_out_and_the_rest_is_aggregated(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    govern(platform, "secure_group_size", 3)
    six = ORGS[:6]
    round_ = platform.open_round(duration=600, quorum=3, cohort=six)
    rid = round_["id"]
    spec = dict(sorted({k: v.shape for k, v in platform.global_weights().items()}.items()))
    members = {}
    for i in six:
        api = FedLedgerApi(
            http=platform.client, wallet=Wallet(dev_private_key(i)), retry=NO_RETRY, siwe_domain="testserver"
        )
        update, claim = trained_update(platform, i, spec)
        members[i] = SecureRound(api, rid, address_of(i), dev_private_key(i), update, claim)
    for m in members.values():
        m.step()
    mine(platform)
    groups = groups_of(members)
    assert sorted(len(g) for g in groups.values()) == [3, 3]
    # Two of group 0's three members vanish after dealing their shares: one survivor is below the threshold.
    lone, *gone = groups[0]
    refused = drive(members, {g: {"join", "keys", "shares"} for g in gone})
    # The lone survivor's own check refuses to reveal anything: unmasking would expose its update.
    assert list(refused) == [lone] and "TooManyDropouts" in str(refused[lone])

    final = platform.wait_for(rid, {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "POSTED", final
    engine = sa.create_engine(platform.settings.database_url)
    try:
        with engine.connect() as conn:
            stored = {
                g.group_index: g
                for g in conn.execute(sa.select(SecAggGroup).where(SecAggGroup.round_id == rid))
            }
            assert "TooManyDropouts" in stored[0].failure_reason and stored[0].mean_hash is None
            assert stored[1].failure_reason is None and len(stored[1].survivors) == 3
            rows = {
                r.address: r
                for r in conn.execute(
                    sa.select(Update.status, Update.rejection_reason, Participant.address)
                    .join(Participant, Participant.id == Update.participant_id)
                    .where(Update.round_id == rid)
                )
            }
            assert rows[address_of(lone)].status == UpdateStatus.excluded
            assert "was left out of the round: TooManyDropouts" in rows[address_of(lone)].rejection_reason
            scored = (
                conn.execute(
                    sa.select(Participant.address)
                    .join(Contribution, Contribution.participant_id == Participant.id)
                    .where(Contribution.round_id == rid)
                )
                .scalars()
                .all()
            )
            assert sorted(scored) == sorted(address_of(i) for i in groups[1])
            public = check_public_groups(platform, conn, rid)
    finally:
        engine.dispose()
    failed, unmasked = public["groups"]
    assert failed["status"] == "failed" and "TooManyDropouts" in failed["failure_reason"]
    assert (failed["survivors"], failed["kept"], failed["reward_wei"]) == (None, None, "0")
    assert (unmasked["status"], unmasked["survivors"], unmasked["dropped"]) == ("unmasked", 3, 0)
    assert unmasked["kept"] is True and unmasked["flagged"] is False and int(unmasked["reward_wei"]) > 0


def check_public_groups(platform: Platform, conn: sa.Connection, rid: int) -> dict[str, Any]:
    """The public groups report of a closed round against what the close stored: the same groups, members,
    counts and outcomes, each group's reward the sum of its members' contributions, and nothing that points
    at a group's mean (no mean, no blob hash the server keeps)."""
    response = platform.client.get(f"/v1/rounds/{rid}/secagg/groups")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    stored = list(
        conn.execute(
            sa.select(SecAggGroup).where(SecAggGroup.round_id == rid).order_by(SecAggGroup.group_index)
        )
    )
    scored = {
        c.address.lower(): c
        for c in conn.execute(
            sa.select(Contribution.kept, Contribution.byzantine, Contribution.reward_wei, Participant.address)
            .join(Participant, Participant.id == Contribution.participant_id)
            .where(Contribution.round_id == rid)
        )
    }
    assert report["round_status"] == "POSTED" and len(report["groups"]) == len(stored)
    for shown, group in zip(report["groups"], stored, strict=True):
        assert (shown["index"], shown["members"], shown["threshold"]) == (
            group.group_index,
            group.members,
            group.threshold,
        )
        assert shown["size"] == len(group.members)
        assert shown["failure_reason"] == group.failure_reason
        in_sum = [scored[a.lower()] for a in group.survivors or [] if a.lower() in scored]
        assert shown["reward_wei"] == str(sum(int(c.reward_wei) for c in in_sum))
        if group.failure_reason is None:
            assert (shown["survivors"], shown["dropped"]) == (len(group.survivors), len(group.dropped))
            assert {(c.kept, c.byzantine) for c in in_sum} == {(shown["kept"], shown["flagged"])}
    blob_hashes = [g.mean_hash for g in stored if g.mean_hash] + [
        h
        for (h,) in conn.execute(sa.select(SecAggMessage.blob_hash).where(SecAggMessage.round_id == rid))
        if h
    ]
    assert blob_hashes and not any(h in response.text for h in blob_hashes)
    fields = set(report) | {k for g in report["groups"] for k in g}
    assert not [f for f in fields if "mean" in f or f.endswith("_hash") and f != "seed_block_hash"]
    return report


def _check_aggregate(
    platform: Platform,
    conn: sa.Connection,
    rid: int,
    groups: dict[int, list[int]],
    updates: dict[int, np.ndarray],
    claims: dict[int, int],
    dropped: set[int],
) -> None:
    stored = {
        g.group_index: g for g in conn.execute(sa.select(SecAggGroup).where(SecAggGroup.round_id == rid))
    }
    for index, orgs in groups.items():
        group = stored[index]
        survivors = [i for i in orgs if i not in dropped]
        assert group.failure_reason is None, group.failure_reason
        assert sorted(a.lower() for a in group.survivors) == sorted(address_of(i).lower() for i in survivors)
        assert sorted(a.lower() for a in group.dropped) == sorted(
            address_of(i).lower() for i in orgs if i in dropped
        )
        # The aggregate the round used: the survivors' mean of their updates (each clipped to the governed
        # secure_clip, 1.0), within the quantizer's error.
        mean = np.frombuffer(platform_blob(platform, group.mean_hash), dtype="<f4")
        expected = np.mean([np.clip(updates[i], -1.0, 1.0) for i in survivors], axis=0)
        error = Quantizer(1.0, len(orgs)).sum_error(len(survivors)) / len(survivors)
        assert np.max(np.abs(mean - expected)) <= error + 1e-6
    # Pay: every kept member is paid by its group's split, the root is on chain exactly as computed.
    record = conn.execute(sa.select(Aggregation).where(Aggregation.round_id == rid)).one()
    assert record.params["secure_groups"] == 4 and record.params["secure_members"] == 10
    contributions = conn.execute(
        sa.select(Contribution.reward_wei, Contribution.kept, Participant.address)
        .join(Participant, Participant.id == Contribution.participant_id)
        .where(Contribution.round_id == rid)
    ).all()
    assert len(contributions) == 10
    paid = sum(int(c.reward_wei) for c in contributions)
    assert paid == int(record.total_reward_wei) > 0
    # The poisoned group (two sign-flipped, 10x updates in it) is left out and unpaid; honest groups are paid.
    by_address = {c.address.lower(): c for c in contributions}
    poisoned = [by_address[address_of(i).lower()] for i in groups[3]]
    assert all(not c.kept and int(c.reward_wei) == 0 for c in poisoned)
    assert any(
        by_address[address_of(i).lower()].kept for g in (0, 1, 2) for i in groups[g] if i not in dropped
    )
    ledger = platform.deployments.contract(platform.w3, "ContributionLedger")
    onchain = ledger.functions.roundOf(rid).call()
    assert "0x" + bytes(onchain[1]).hex() == record.rewards_root and onchain[2] == paid
    # The dropouts are not scored: no contribution, no update row.
    addresses = set(by_address)
    assert all(address_of(i).lower() not in addresses for i in dropped)
    statuses = {u.status for u in conn.execute(sa.select(Update).where(Update.round_id == rid))}
    assert statuses <= {UpdateStatus.aggregated, UpdateStatus.excluded}


def platform_blob(platform: Platform, digest: str) -> bytes:
    return open_blob_store(platform.settings).get(digest)


def _check_nothing_stored_reveals_an_update(
    platform: Platform, conn: sa.Connection, rid: int, updates: dict[int, np.ndarray], dropped: set[int]
) -> None:
    survivors = {address_of(i).lower() for i in updates if i not in dropped}
    gone = {address_of(i).lower() for i in dropped}
    # Every vector the server holds for the round: masked inputs, group means, the new model's change.
    vectors: list[np.ndarray] = []
    messages = conn.execute(sa.select(SecAggMessage).where(SecAggMessage.round_id == rid)).all()
    quantizer = Quantizer(1.0, 3)
    for m in messages:
        if m.blob_hash is not None:
            raw = np.frombuffer(platform_blob(platform, m.blob_hash), dtype="<u4")
            vectors.append(quantizer.decode_sum(raw))
    for group in conn.execute(sa.select(SecAggGroup).where(SecAggGroup.round_id == rid)):
        vectors.append(np.frombuffer(platform_blob(platform, group.mean_hash), dtype="<f4"))
    for (digest,) in conn.execute(sa.select(Update.ciphertext_hash).where(Update.round_id == rid)):
        vectors.append(quantizer.decode_sum(np.frombuffer(platform_blob(platform, digest), dtype="<u4")))
    for i, update in updates.items():
        tolerance = 0.05 * float(np.max(np.abs(update)))
        for v in vectors:
            assert v.shape == update.shape
            assert np.max(np.abs(v - update)) > tolerance, f"a stored vector reveals org {i}'s update"
    # No survivor's mask key share is on record (the reveals hold key shares of dropped members only), so
    # no combination of what is stored removes a single survivor's pairwise masks.
    for m in messages:
        if m.step is not SecAggStep.unmask:
            continue
        reveal = wire.reveal_from(m.body)
        assert {o.lower() for o in reveal.key_shares} <= gone
        assert not ({o.lower() for o in reveal.key_shares} & survivors)
    # Only members' messages and group outcomes: the rows' bodies hold no float update, and the audit log
    # of the round records phases and the seed only.
    for entry in conn.execute(sa.select(AuditEntry).where(AuditEntry.subject == str(rid))):
        assert len(str(entry.details)) < 2000
    # The tasks the server sends carry the round id, nothing else; the broker holds no update-sized value.
    assert list(inspect.signature(tasks.close).parameters) == ["round_id"]
    assert list(inspect.signature(tasks.post).parameters) == ["round_id"]
    broker = redis.Redis.from_url(platform.settings.resolved_broker_url)
    dimension = next(iter(updates.values())).size
    for key in broker.scan_iter(count=1000):
        kind = broker.type(key)
        if kind == b"string":
            assert len(broker.get(key) or b"") < 4 * dimension, key
        elif kind == b"list":
            assert all(len(item) < 4 * dimension for item in broker.lrange(key, 0, -1)), key


def test_organizations_take_part_through_the_sdk_without_seeing_the_extra_steps(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    """``Organization.participate`` is the whole client side: it sees the round's mode and runs the steps,
    each organization in its own thread as each would on its own machine."""
    govern(platform, "secure_group_size", 3)
    trio = ORGS[:3]
    round_ = platform.open_round(duration=600, quorum=3, cohort=trio)
    orgs = {
        i: Organization(Wallet(dev_private_key(i)), http=platform.client, w3=platform.w3, poll_interval=0.3)
        for i in trio
    }
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}

    def take_part(i: int) -> None:
        X, y = platform.partitions[i]
        try:
            results[i] = orgs[i].participate(Dataset(X.astype(np.float32), y), seed=i, timeout=240)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors[i] = exc

    threads = [threading.Thread(target=take_part, args=(i,)) for i in trio]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        mine(platform)  # a chain that mines on its own would draw the groups from its next block
        time.sleep(1.0)
    for t in threads:
        t.join(timeout=5)
    assert errors == {} and sorted(results) == list(trio), errors
    assert {r.round_id for r in results.values()} == {round_["id"]}
    assert all(r.prepared.key_id == "secagg" and r.receipt.receipt_id for r in results.values())
    final = platform.wait_for(round_["id"], {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "POSTED", final
    for org in orgs.values():
        scored = org.participation.contribution(round_["id"])
        assert scored is not None and scored["kept"] is True, scored
        org.close()


def test_under_dp_each_member_adds_its_share_of_the_noise_before_masking(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    """With DP governed on, the SDK clips each update to the DP clip norm and adds its share of the noise
    before masking: the group's unmasked mean carries the noise the accountant charges for, no more, no less."""
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    trio = ORGS[:3]
    round_ = platform.open_round(duration=600, quorum=3, cohort=trio)
    rid = round_["id"]
    spec = dict(sorted({k: v.shape for k, v in platform.global_weights().items()}.items()))
    members, updates = {}, {}
    for i in trio:
        api = FedLedgerApi(
            http=platform.client, wallet=Wallet(dev_private_key(i)), retry=NO_RETRY, siwe_domain="testserver"
        )
        updates[i], claim = trained_update(platform, i, spec)
        members[i] = SecureRound(api, rid, address_of(i), dev_private_key(i), updates[i], claim)
    for m in members.values():
        m.step()
    mine(platform)
    assert drive(members, {}) == {}
    final = platform.wait_for(rid, {"POSTED", "FAILED"}, timeout=180)
    engine = sa.create_engine(platform.settings.database_url)
    try:
        with engine.connect() as conn:
            group = conn.execute(sa.select(SecAggGroup).where(SecAggGroup.round_id == rid)).one()
            mean = np.frombuffer(platform_blob(platform, group.mean_hash), dtype="<f4")
            record = conn.execute(sa.select(Aggregation).where(Aggregation.round_id == rid)).one_or_none()
    finally:
        engine.dispose()
    # The genesis DP settings (clip norm 1, multiplier 1), a group of 3 at threshold 2.
    clipped = [u * min(1.0, 1.0 / float(np.linalg.norm(u))) for u in updates.values()]
    residual = mean - np.mean(clipped, axis=0)
    member_std = MemberNoise.for_group(1.0, 1.0, 3, 2).std
    expected = member_std * np.sqrt(3) / 3
    assert 0.85 * expected < float(np.std(residual)) < 1.15 * expected, (np.std(residual), expected)
    assert abs(float(np.mean(residual))) < 4 * expected / np.sqrt(residual.size)
    # The round is posted and charged at its group's noise multiplier (z sqrt(m / t) = sqrt(3 / 2) here).
    assert final["status"] == "POSTED", final
    assert record is not None and record.epsilon_spent is not None and record.epsilon_spent > 0
    assert record.params["dp_effective_noise_multiplier"] == pytest.approx(np.sqrt(3 / 2))


class NoiselessRound(SecureRound):
    """A client that does not implement the mode's DP: it masks its update without its noise share."""

    def _noise(self, view: Any) -> None:
        return None


def test_under_dp_a_group_whose_sum_carries_no_noise_is_left_out(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    govern(platform, "secure_group_size", 3)
    govern(platform, "dp_enabled", 1)
    six = ORGS[:6]
    round_ = platform.open_round(duration=600, quorum=3, cohort=six)
    rid = round_["id"]
    spec = dict(sorted({k: v.shape for k, v in platform.global_weights().items()}.items()))
    apis = {
        i: FedLedgerApi(
            http=platform.client, wallet=Wallet(dev_private_key(i)), retry=NO_RETRY, siwe_domain="testserver"
        )
        for i in six
    }
    for i in six:
        SecureRound(apis[i], rid, address_of(i), dev_private_key(i), np.zeros(1, np.float32), 1).step()
    mine(platform)
    probe = {
        i: SecureRound(apis[i], rid, address_of(i), dev_private_key(i), np.zeros(1, np.float32), 1)
        for i in six
    }
    groups = groups_of(probe)
    members: dict[int, SecureRound] = {}
    for index, orgs in groups.items():
        kind = NoiselessRound if index == 0 else SecureRound
        for i in orgs:
            update, claim = trained_update(platform, i, spec)
            members[i] = kind(apis[i], rid, address_of(i), dev_private_key(i), update, claim)
    assert drive(members, {}) == {}
    final = platform.wait_for(rid, {"POSTED", "FAILED"}, timeout=180)
    assert final["status"] == "POSTED", final
    engine = sa.create_engine(platform.settings.database_url)
    try:
        with engine.connect() as conn:
            stored = {
                g.group_index: g
                for g in conn.execute(sa.select(SecAggGroup).where(SecAggGroup.round_id == rid))
            }
            assert "carries not even one member's share of the noise" in stored[0].failure_reason
            assert stored[1].failure_reason is None and stored[1].mean_hash is not None
            scored = (
                conn.execute(
                    sa.select(Participant.address)
                    .join(Contribution, Contribution.participant_id == Participant.id)
                    .where(Contribution.round_id == rid)
                )
                .scalars()
                .all()
            )
            assert sorted(scored) == sorted(address_of(i) for i in groups[1])
            record = conn.execute(sa.select(Aggregation).where(Aggregation.round_id == rid)).one()
            assert record.epsilon_spent is not None and record.epsilon_spent > 0
    finally:
        engine.dispose()
