"""Encrypted, signed update submission: acceptance, idempotency, and every refusal."""

from __future__ import annotations

import hashlib
import json
import struct
import time

import numpy as np
import pytest
import redis
from sqlalchemy import func
from sqlalchemy import update as sa_update
from web3 import Web3

from db.models import Participant, ParticipantStatus, RoundStatus
from fedledger.chain.tx import send_transaction
from fedledger.crypto.eip712 import sign_update
from fedledger.crypto.envelope import seal
from fedledger.crypto.keys import generate_server_key
from fedledger.devkeys import AGGREGATOR_INDEX, dev_private_key
from fedledger.payload import encode_update
from tests.middleware.conftest import (
    MODEL,
    NEVER_ENROLLED,
    ORGS,
    REDIS_BROKER_DB,
    SLASHED,
    World,
    address_of,
    login,
    make_update,
    post_update,
)
from tests.middleware.test_posting_backlog import set_status


def refused(response, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.json()["error"] == code, response.text
    return response.json()["detail"]


def test_an_accepted_update_is_stored_recorded_audited_and_queued(world: World) -> None:
    broker = redis.Redis.from_url(REDIS_BROKER_DB)
    envelope, signature = make_update(world, ORGS[0])
    response = post_update(world, ORGS[0], envelope, signature)
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["payload_hash"] == "0x" + hashlib.sha256(envelope).hexdigest()
    assert receipt["participant"] == address_of(ORGS[0]) and not receipt["replayed"]
    state = world.client.app.state.fl
    assert state.blobs.get(receipt["payload_hash"][2:]) == envelope
    assert world.client.get(f"/v1/rounds/{world.round['id']}").json()["submissions"] == 1
    # Below the quorum (3) nothing is sent to the aggregator.
    assert broker.llen("celery") == 0
    audit = world.client.get("/v1/audit", headers=world.operator).json()
    assert audit[-1]["action"] == "update.submit" and audit[-1]["details"]["receipt"] == receipt["receipt_id"]


def test_the_last_active_organizations_submission_sends_the_rounds_one_close(world: World) -> None:
    """Issue 20: reaching the quorum (3) sends nothing while active organizations have not submitted; the
    update that completes them sends the close, once, through the real broker."""
    broker = redis.Redis.from_url(REDIS_BROKER_DB)
    with world.client.app.state.fl.sessions.begin() as session:  # type: ignore[attr-defined]
        # SLASHED (registered by the world unless an earlier test slashed it) is not waited for.
        session.execute(
            sa_update(Participant)
            .where(func.lower(Participant.address) == address_of(SLASHED).lower())
            .values(status=ParticipantStatus.suspended)
        )
    updates = [make_update(world, index) for index in ORGS]
    for index, (envelope, signature) in zip(ORGS[:4], updates[:4], strict=True):
        assert post_update(world, index, envelope, signature).status_code == 202
    assert broker.llen("celery") == 0
    assert post_update(world, ORGS[4], *updates[4]).status_code == 202
    # A replay sends nothing more.
    assert post_update(world, ORGS[4], *updates[4]).json()["replayed"] is True
    messages = [json.loads(m) for m in broker.lrange("celery", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        ("fedledger.rounds.close", f"[{world.round['id']}]")
    ]


def test_resubmitting_the_same_payload_returns_the_same_receipt(world: World) -> None:
    envelope, signature = make_update(world, ORGS[1])
    first = post_update(world, ORGS[1], envelope, signature).json()
    again = post_update(world, ORGS[1], envelope, signature)
    assert again.status_code == 202
    assert again.json()["receipt_id"] == first["receipt_id"] and again.json()["replayed"] is True
    assert world.client.get(f"/v1/rounds/{world.round['id']}").json()["submissions"] == 1


def test_a_different_payload_for_the_same_round_conflicts(world: World) -> None:
    envelope, signature = make_update(world, ORGS[2], seed=1)
    assert post_update(world, ORGS[2], envelope, signature).status_code == 202
    other, other_signature = make_update(world, ORGS[2], seed=2)
    detail = refused(post_update(world, ORGS[2], other, other_signature), 409, "conflicting_update")
    assert "already accepted" in detail


def test_unregistered_and_never_enrolled_participants_are_refused(world: World) -> None:
    # A wallet without stake cannot register, so it has no participant record to submit with.
    envelope, signature = make_update(world, NEVER_ENROLLED)
    refused(post_update(world, NEVER_ENROLLED, envelope, signature), 403, "not_registered")
    envelope, signature = make_update(world, 9)
    refused(post_update(world, 9, envelope, signature), 403, "not_registered")


def test_a_slashed_participant_is_refused(world: World, w3: Web3) -> None:
    registry = world.deployments.contract(w3, "ParticipantRegistry")
    registered = registry.functions.isActive(address_of(SLASHED)).call()
    if registered:  # the world registered it while it was active; the first run of the session slashes it
        send_transaction(
            w3,
            registry.functions.slash(address_of(SLASHED), 10**18, b"\x01" * 32),
            dev_private_key(AGGREGATOR_INDEX),
        )
    envelope, signature = make_update(world, SLASHED)
    response = post_update(world, SLASHED, envelope, signature)
    refused(response, 403, "participant_slashed" if registered else "not_registered")
    # Nor may it register (again) or change its registration.
    headers = login(world.client, SLASHED)
    response = world.client.post("/v1/participants", json={"org_name": "renamed"}, headers=headers)
    refused(response, 403, "participant_slashed")


def test_wrong_round_and_wrong_model_version_are_refused(world: World) -> None:
    envelope, signature = make_update(world, ORGS[3], round_id=world.round["id"] + 1)
    refused(post_update(world, ORGS[3], envelope, signature), 422, "wrong_round")
    refused(
        post_update(world, ORGS[3], envelope, signature, round_id=world.round["id"] + 1), 404, "unknown_round"
    )
    envelope, signature = make_update(world, ORGS[3], model_version=world.round["model_version"] + 5)
    refused(post_update(world, ORGS[3], envelope, signature), 422, "wrong_model_version")


def test_an_envelope_naming_another_participant_is_refused(world: World) -> None:
    envelope, signature = make_update(world, ORGS[0])
    refused(post_update(world, ORGS[1], envelope, signature), 403, "wrong_participant")


def test_oversized_updates_are_refused_before_reading_them(world: World) -> None:
    limit = world.client.app.state.fl.settings.max_update_bytes
    response = world.client.post(
        f"/v1/rounds/{world.round['id']}/updates",
        content=b"\0" * (limit + 1),
        headers={**login(world.client, ORGS[0]), "X-Update-Signature": "0x00"},
    )
    refused(response, 413, "too_large")


def test_bad_signatures_are_refused(world: World) -> None:
    envelope, signature = make_update(world, ORGS[0], signer_index=ORGS[1])
    refused(post_update(world, ORGS[0], envelope, signature), 401, "bad_signature")
    # A valid signature over different fields (the claimed sample count) recovers another address.
    envelope, _ = make_update(world, ORGS[0], num_samples=100)
    forged = sign_update(
        dev_private_key(ORGS[0]),
        chain_id=31337,
        verifying_contract=world.deployments.addresses["ContributionLedger"],
        round_id=world.round["id"],
        model_version=world.round["model_version"],
        payload_hash=hashlib.sha256(envelope).digest(),
        num_samples=5000,
    )
    refused(post_update(world, ORGS[0], envelope, forged), 401, "bad_signature")
    refused(post_update(world, ORGS[0], envelope, "0xdeadbeef"), 401, "bad_signature")


def test_undecryptable_and_malformed_envelopes_are_refused(world: World) -> None:
    stranger = generate_server_key()
    envelope = seal(
        encode_update({k: v + 1 for k, v in MODEL.items()}),
        stranger.public_pem,
        round_id=world.round["id"],
        model_version=world.round["model_version"],
        participant=address_of(ORGS[0]),
        num_samples=10,
    )
    signature = _sign(world, ORGS[0], envelope, 10)
    refused(post_update(world, ORGS[0], envelope, signature), 422, "unknown_key")
    good, _ = make_update(world, ORGS[0], num_samples=10)
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    refused(post_update(world, ORGS[0], tampered, _sign(world, ORGS[0], tampered, 10)), 422, "undecryptable")
    refused(post_update(world, ORGS[0], b"garbage", "0x00"), 400, "malformed_envelope")


def test_shape_mismatch_is_refused(world: World) -> None:
    envelope, signature = make_update(
        world,
        ORGS[0],
        delta={"dense.weight": np.ones((4, 16), np.float32), "dense.bias": np.ones(4, np.float32)},
    )
    detail = refused(post_update(world, ORGS[0], envelope, signature), 422, "shape_mismatch")
    assert "dense.weight" in detail


def test_late_submissions_are_refused_with_the_rounds_state(world: World) -> None:
    client = world.client
    # Close the world's round the way the worker does, then open a very short one.
    with client.app.state.fl.sessions.begin() as session:
        from db.models import Round, RoundStatus

        session.get(Round, world.round["id"]).status = RoundStatus.closing
    envelope, signature = make_update(world, ORGS[4])
    detail = refused(post_update(world, ORGS[4], envelope, signature), 409, "round_not_open")
    assert "CLOSING" in detail
    with client.app.state.fl.sessions.begin() as session:
        session.get(Round, world.round["id"]).status = RoundStatus.posted
    short = client.post("/v1/rounds", json={"duration_seconds": 1}, headers=world.operator).json()
    time.sleep(1.2)
    world.round = short
    envelope, signature = make_update(world, ORGS[4])
    detail = refused(post_update(world, ORGS[4], envelope, signature), 409, "round_deadline_passed")
    assert "has passed" in detail


def test_rejections_are_counted_by_reason(world: World) -> None:
    envelope, signature = make_update(world, NEVER_ENROLLED)
    post_update(world, NEVER_ENROLLED, envelope, signature)
    metrics = world.client.get("/metrics").text
    assert 'fedledger_update_rejections_total{reason="not_registered"} 1.0' in metrics


def _sign(world: World, index: int, envelope: bytes, num_samples: int) -> str:
    return sign_update(
        dev_private_key(index),
        chain_id=31337,
        verifying_contract=world.deployments.addresses["ContributionLedger"],
        round_id=world.round["id"],
        model_version=world.round["model_version"],
        payload_hash=hashlib.sha256(envelope).digest(),
        num_samples=num_samples,
    )


def _safetensors_with_dtype(dtype: str, item_bytes: int) -> bytes:
    """A dense update of the test model whose tensors declare ``dtype``: what a PyTorch client that forgot
    ``.float()`` sends for bfloat16 (NumPy cannot even represent it)."""
    header: dict = {}
    offset = 0
    for name, array in MODEL.items():
        size = array.size * item_bytes
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    shapes = {name: list(array.shape) for name, array in MODEL.items()}
    header["__metadata__"] = {
        "fedledger.format": "1",
        "fedledger.encoding": "dense",
        "fedledger.shapes": json.dumps(shapes, separators=(",", ":"), sort_keys=True),
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(range(256)) * (offset // 256) + b"\x01" * (offset % 256)


@pytest.mark.parametrize("dtype, item_bytes", [("BF16", 2), ("F8_E4M3", 1), ("F64", 8), ("I16", 2)])
def test_an_update_with_a_tensor_neither_float32_nor_float16_is_refused_with_its_dtype(
    world: World, dtype: str, item_bytes: int
) -> None:
    envelope, signature = make_update(world, ORGS[0], plaintext=_safetensors_with_dtype(dtype, item_bytes))
    detail = refused(post_update(world, ORGS[0], envelope, signature), 422, "unsupported_dtype")
    assert f"has dtype {dtype}" in detail and "float32" in detail
    assert world.client.get(f"/v1/rounds/{world.round['id']}").json()["submissions"] == 0
    # The refusal stored nothing: the same organization's proper update is still accepted.
    envelope, signature = make_update(world, ORGS[0])
    assert post_update(world, ORGS[0], envelope, signature).status_code == 202


def test_a_cohort_round_takes_only_its_members_and_closes_at_the_last_one(world: World) -> None:
    """A round opened for a Flower server's sample (ORGS[:2] of five active organizations): ORGS[2] is
    refused, and the second member's update sends the close without waiting for anyone uninvited."""
    broker = redis.Redis.from_url(REDIS_BROKER_DB)
    set_status(world, world.round["id"], RoundStatus.failed)  # the world's round is over
    invited = [address_of(i) for i in ORGS[:2]]
    too_few = world.client.post("/v1/rounds", json={"quorum": 3, "cohort": invited}, headers=world.operator)
    assert "can never reach the round's quorum of 3" in refused(too_few, 422, "invalid_cohort")
    response = world.client.post("/v1/rounds", json={"quorum": 2, "cohort": invited}, headers=world.operator)
    assert response.status_code == 201, response.text
    cohort_round = response.json()
    assert cohort_round["cohort"] == sorted(a.lower() for a in invited)
    rid = cohort_round["id"]
    outsider = post_update(world, ORGS[2], *make_update(world, ORGS[2], round_id=rid), round_id=rid)
    assert address_of(ORGS[2]) in refused(outsider, 403, "not_in_cohort")
    assert (
        post_update(world, ORGS[0], *make_update(world, ORGS[0], round_id=rid), round_id=rid).status_code
        == 202
    )
    assert broker.llen("celery") == 0
    assert (
        post_update(world, ORGS[1], *make_update(world, ORGS[1], round_id=rid), round_id=rid).status_code
        == 202
    )
    messages = [json.loads(m) for m in broker.lrange("celery", 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        ("fedledger.rounds.close", f"[{rid}]")
    ]
