"""The SDK against the real API (tests/middleware's app on SQLite and PostgreSQL, Redis) and the session's
Hardhat node: sign-in, registration, on-chain enrollment, model verification, submission and receipts."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from web3 import Web3

from client.data import Dataset
from client.errors import (
    AuthenticationError,
    ConflictError,
    ModelVerificationError,
    NoOpenRoundError,
    NotEnrolledError,
    NotFoundError,
    NotRegisteredError,
    RoundClosedError,
)
from client.sdk import Organization, dev_model_signer
from client.sealing import Chunking
from client.training import LocalDP
from client.wallet import Wallet
from db.models import ModelVersion
from fedledger.api.client import FedLedgerApi
from fedledger.chain.deployments import Deployments
from fedledger.config import Settings
from fedledger.crypto.chunked import parse_head
from fedledger.crypto.eip712 import sign_model
from fedledger.devkeys import dev_private_key
from fedledger.payload import Compression, decode_weights, encode_weights
from middleware.app import create_app
from tests.client.conftest import CLIENT_ORGS, NEVER_ENROLLED, login
from tests.middleware.conftest import ensure_enrolled

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


def test_sign_in_register_enroll_and_status(make_org, w3: Web3, deployments: Deployments) -> None:  # type: ignore[no-untyped-def]
    org: Organization = make_org(CLIENT_ORGS[0], org_name="Clinic Ten")
    session = org.sign_in()
    assert session.address == org.address and session.roles == ["participant"]
    registry = deployments.contract(w3, "ParticipantRegistry")
    if not registry.functions.isActive(org.address).call():  # not enrolled by an earlier test yet
        with pytest.raises(NotEnrolledError, match="fedledger client enroll"):
            org.register()
    token = deployments.contract(w3, "RewardToken")
    before = token.functions.balanceOf(org.address).call()
    result = org.ensure_enrolled()
    assert org.register().org_name == "Clinic Ten"
    assert org.register().org_name == "Clinic Ten"  # idempotent
    status = org.chain_status()
    assert (
        registry.functions.isActive(org.address).call() and status["active"] and status["status"] == "active"
    )
    if result.already_active:  # enrolled by an earlier run of this test in the session
        assert result.tx_hashes == ()
    else:
        assert len(result.tx_hashes) == 2 and result.stake_wei == status["min_stake_wei"]
        assert before - token.functions.balanceOf(org.address).call() == result.stake_wei
    again = org.ensure_enrolled()
    assert again.already_active and again.tx_hashes == ()
    me = org.api.me()
    assert me.may_submit and me.chain_status == "active" and int(me.stake_wei or 0) == status["stake_wei"]
    overview = org.status()
    assert overview["registered"] and overview["round"] is None and overview["model"] is None


def test_verified_model_update_receipt_and_idempotent_resubmission(
    make_org,
    open_round: dict[str, Any],
    digits_parts: list[Dataset],  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(
        CLIENT_ORGS[1],
        compression=Compression(topk_fraction=0.5, half=True),
        dp=LocalDP(clip_norm=5.0, noise_multiplier=0.01),
        trainer_options={"epochs": 3},
    )
    org.setup()
    model = org.pull_model(open_round["model_version"])
    assert model.signer == dev_model_signer() and model.version == open_round["model_version"]
    assert model.produced_by_round is None and not model.onchain_verified  # genesis: nothing on-chain yet
    training = org.train(model, digits_parts[1], seed=1)
    assert training.after.accuracy > training.before.accuracy and training.num_samples == len(digits_parts[1])
    assert training.delta_norm <= 5.0 + 0.5  # clipped (plus a little noise)
    prepared = org.prepare_update(open_round["id"], model.version, training.delta, training.num_samples)
    receipt = org.submit(prepared)
    assert (
        receipt.payload_hash == "0x" + hashlib.sha256(prepared.envelope).hexdigest() == prepared.payload_hash
    )
    assert not receipt.replayed and receipt.num_samples == len(digits_parts[1])
    # A lost answer: the same bytes again give the same receipt.
    again = org.submit(prepared)
    assert again.receipt_id == receipt.receipt_id and again.replayed
    # Sealing the same delta again is a different payload (encryption is randomized): refused, typed.
    resealed = org.prepare_update(open_round["id"], model.version, training.delta, training.num_samples)
    assert resealed.envelope != prepared.envelope
    with pytest.raises(ConflictError) as conflict:
        org.submit(resealed)
    assert conflict.value.code == "conflicting_update" and conflict.value.status == 409
    assert org.api.round(open_round["id"]).submissions == 1


def test_participate_spools_the_envelope_and_resends_it_after_a_crash(
    make_org,
    open_round: dict[str, Any],
    digits_parts: list[Dataset],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[2], spool_dir=tmp_path / "spool")
    org.setup()
    epochs: list[tuple[int, int]] = []
    uploads: list[tuple[int, int]] = []
    first = org.participate(
        digits_parts[2],
        seed=3,
        train_progress=lambda d, t: epochs.append((d, t)),
        upload_progress=lambda s, t: uploads.append((s, t)),
    )
    assert first.round_id == open_round["id"] and not first.receipt.replayed
    assert epochs[-1] == (10, 10) and uploads[-1] == (first.prepared.size, first.prepared.size)
    assert set(first.timings) == {"pull_and_verify", "train", "seal_and_sign", "submit", "total"}
    # The client "crashed" after sending and before recording the receipt: it resends the spooled bytes
    # (training again would produce a different payload, which the server would refuse).
    receipts = list((tmp_path / "spool").rglob("*.receipt.json"))
    assert len(receipts) == 1
    receipts[0].unlink()
    second = make_org(CLIENT_ORGS[2], spool_dir=tmp_path / "spool").participate(digits_parts[2], seed=99)
    assert second.training is None and second.receipt.replayed
    assert second.receipt.receipt_id == first.receipt.receipt_id
    # With the receipt on disk, the envelope is still resent: only the server's answer is shown as success.
    third = make_org(CLIENT_ORGS[2], spool_dir=tmp_path / "spool").participate(digits_parts[2])
    assert third.training is None and third.receipt.replayed
    assert third.receipt.receipt_id == first.receipt.receipt_id
    assert org.api.round(open_round["id"]).submissions == 1


def _tamper_weights(client: TestClient, version: int) -> None:
    state = client.app.state.fl
    with state.sessions() as session:
        digest = session.get(ModelVersion, version).weights_hash
    path = state.blobs.path(digest)
    weights = decode_weights(path.read_bytes())
    weights["dense.bias"] = weights["dense.bias"] + 1.0  # a backdoor's worth of change
    path.write_bytes(encode_weights(weights))


def test_a_model_with_the_wrong_hash_is_refused_and_never_trained_on(
    make_org,
    client: TestClient,
    open_round: dict[str, Any],
    digits_parts: list[Dataset],  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[3])
    org.setup()
    _tamper_weights(client, open_round["model_version"])
    with pytest.raises(ModelVerificationError, match="hash to sha256:.*advertised"):
        org.pull_model()
    with pytest.raises(ModelVerificationError):
        org.participate(digits_parts[3])
    assert client.get(f"/v1/rounds/{open_round['id']}").json()["submissions"] == 0


def test_a_model_signed_by_anyone_but_the_trusted_signer_is_refused(
    make_org,
    client: TestClient,
    settings: Settings,
    genesis: dict[str, Any],
    deployments: Deployments,  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[3])
    assert org.pull_model().signer == dev_model_signer()
    # The organization trusts another signer: the server's (valid) signature is not enough.
    other = make_org(CLIENT_ORGS[3], trusted_model_signer=Wallet(dev_private_key(5)).address)
    with pytest.raises(ModelVerificationError, match="not by the trusted model signer"):
        other.pull_model()
    # The server (or its database) serves a signature made with another key.
    forged = sign_model(
        dev_private_key(5),
        chain_id=deployments.chain_id,
        verifying_contract=deployments.addresses["ContributionLedger"],
        version=genesis["version"],
        model_hash=bytes.fromhex(genesis["weights_hash"]),
    )
    state = client.app.state.fl
    with state.sessions.begin() as session:
        session.execute(
            update(ModelVersion).where(ModelVersion.id == genesis["version"]).values(signature=forged)
        )
    with pytest.raises(ModelVerificationError, match=f"signed by {Wallet(dev_private_key(5)).address}"):
        org.pull_model()
    # A signature for another version (replayed from elsewhere) recovers to an unrelated address.
    replayed = sign_model(
        settings.resolved_model_signer_key,
        chain_id=deployments.chain_id,
        verifying_contract=deployments.addresses["ContributionLedger"],
        version=genesis["version"] + 1,
        model_hash=bytes.fromhex(genesis["weights_hash"]),
    )
    with state.sessions.begin() as session:
        session.execute(
            update(ModelVersion).where(ModelVersion.id == genesis["version"]).values(signature=replayed)
        )
    with pytest.raises(ModelVerificationError, match="not by the trusted model signer"):
        org.pull_model()


def test_typed_refusals_for_unenrolled_closed_and_unknown(
    make_org,
    client: TestClient,
    operator: dict[str, str],
    genesis: dict[str, Any],
    digits_parts: list[Dataset],  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(NoOpenRoundError, match="no round has been opened"):
        make_org(CLIENT_ORGS[4]).open_round()
    response = client.post("/v1/rounds", json={"duration_seconds": 1, "quorum": 3}, headers=operator)
    assert response.status_code == 201
    round_ = response.json()
    # Account 17 is never enrolled on-chain (read only: other suites rely on that), so it cannot register.
    unenrolled: Organization = make_org(NEVER_ENROLLED)
    unenrolled.sign_in()
    with pytest.raises(NotEnrolledError, match="fedledger client enroll") as refused:
        unenrolled.register()
    assert refused.value.status == 403 and refused.value.code == "not_enrolled"
    with pytest.raises(NotEnrolledError, match="fedledger client enroll"):
        unenrolled.check_may_submit()
    model = unenrolled.pull_model(round_["model_version"])
    delta = {k: np.zeros_like(v) + 0.01 for k, v in model.weights.items()}
    prepared = unenrolled.prepare_update(round_["id"], model.version, delta, 10)
    with pytest.raises(NotRegisteredError) as unregistered:
        unenrolled.submit(prepared)
    assert unregistered.value.status == 403 and unregistered.value.code == "not_registered"

    org: Organization = make_org(CLIENT_ORGS[4])
    org.setup()
    prepared = org.prepare_update(round_["id"], model.version, delta, 10)
    time.sleep(1.1)  # past the deadline
    with pytest.raises(RoundClosedError) as closed:
        org.submit(prepared)
    assert closed.value.code == "round_deadline_passed"
    with pytest.raises(NoOpenRoundError, match="deadline"):
        org.participate(digits_parts[4])
    with pytest.raises(NotFoundError):
        org.api.round(999_999)


def test_an_expired_token_is_renewed_once_and_the_request_repeated(
    settings: Settings, w3: Web3, deployments: Deployments
) -> None:
    ensure_enrolled(w3, deployments, CLIENT_ORGS[0])  # the API registers only organizations with stake
    # Long enough for the first request to finish on a loaded machine, short enough to wait out.
    short = settings.model_copy(update={"jwt_ttl_seconds": 3})
    with TestClient(create_app(short)) as client:
        api = FedLedgerApi(http=client, wallet=Wallet(dev_private_key(CLIENT_ORGS[0])))
        logins = 0
        login_once = api.login

        def counting_login() -> dict[str, Any]:
            nonlocal logins
            logins += 1
            return login_once()

        api.login = counting_login  # type: ignore[method-assign]
        api.register("renewal test")
        # Pretend the local clock believes the token is fresh (skew): the server says token_expired.
        api._token_expires = time.time() + 3600
        time.sleep(3.1)
        assert logins == 1
        assert api.me().org_name == "renewal test"
        assert logins == 2


def test_the_client_refuses_to_sign_a_challenge_for_another_domain(client: TestClient) -> None:
    api = FedLedgerApi(
        http=client, wallet=Wallet(dev_private_key(CLIENT_ORGS[0])), siwe_domain="fl.example.org"
    )
    with pytest.raises(AuthenticationError, match="refusing to sign") as refused:
        api.login()
    assert refused.value.code == "wrong_domain"
    # A wrong signature is the server's refusal, typed.
    challenge = client.post("/v1/auth/nonce", json={"address": api.wallet.address}).json()
    response = client.post(
        "/v1/auth/login", json={"message": challenge["message"], "signature": "0x" + "11" * 65}
    )
    assert response.status_code == 401
    assert login(client, CLIENT_ORGS[0])["Authorization"].startswith("Bearer ")


def test_run_takes_part_in_the_open_round_and_stops_on_request(
    make_org,
    open_round: dict[str, Any],
    digits_parts: list[Dataset],  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[4])
    org.setup()
    events: list[str] = []
    submissions = org.run(
        digits_parts[4], max_rounds=1, seed=0, on_event=lambda kind, payload: events.append(kind)
    )
    assert [s.round_id for s in submissions] == [open_round["id"]] and events == ["round_open", "submitted"]
    # Nothing new to do: the loop polls until it is told to stop.
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert org.run(digits_parts[4], stop=stop, on_event=lambda kind, payload: events.append(kind)) == []
    assert events == ["round_open", "submitted"]


def test_any_model_with_a_custom_train_function(
    make_org,
    client: TestClient,
    operator: dict[str, str],
    digits_parts: list[Dataset],  # type: ignore[no-untyped-def]
) -> None:
    genesis = {
        "linear.kernel": np.zeros((64, 10), np.float32),
        "linear.offset": np.zeros((1, 10), np.float32),
    }
    assert client.post("/v1/models", content=encode_weights(genesis), headers=operator).status_code == 201
    round_ = client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator).json()

    def train(
        weights: dict[str, np.ndarray], data: Dataset, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        # one step of least squares towards one-hot targets: any framework could sit here
        target = np.eye(10, dtype=np.float32)[data.y]
        grad = data.x.T @ (data.x @ weights["linear.kernel"] + weights["linear.offset"] - target) / len(data)
        return {
            "linear.kernel": weights["linear.kernel"] - 0.1 * grad,
            "linear.offset": weights["linear.offset"],
        }

    org: Organization = make_org(CLIENT_ORGS[0])
    org.setup()
    submission = org.participate(digits_parts[0], trainer=train)
    assert (
        submission.round_id == round_["id"] and submission.training.before is None
    )  # no evaluate(): no metrics
    assert submission.training.delta["linear.offset"].shape == (1, 10) and submission.training.delta_norm > 0
    assert client.get(f"/v1/rounds/{round_['id']}").json()["submissions"] == 1


def test_a_model_above_the_chunking_threshold_is_sealed_in_chunks_and_accepted(
    make_org,
    open_round: dict[str, Any],
    digits_parts: list[Dataset],  # type: ignore[no-untyped-def]
) -> None:
    """The SDK flattens the delta in the order of the model it pulled: the order the server's layout check
    expects, so the chunked envelope is accepted as it is."""
    org: Organization = make_org(CLIENT_ORGS[2], chunking=Chunking(threshold_coords=100, chunk_coords=64))
    org.setup()
    model = org.pull_model(open_round["model_version"])
    training = org.train(model, digits_parts[2], seed=2)
    prepared = org.prepare_update(open_round["id"], model.version, training.delta, training.num_samples)
    head = parse_head(prepared.envelope)
    assert head.header.num_chunks == -(-head.header.size // 64) > 1
    receipt = org.submit(prepared)
    assert (
        receipt.payload_hash == prepared.payload_hash == "0x" + hashlib.sha256(prepared.envelope).hexdigest()
    )
