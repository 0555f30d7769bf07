"""Keys, models, rounds, audit, health, metrics, rate limits, CORS and the OpenAPI document."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace

from fastapi.testclient import TestClient
from sqlalchemy import update
from web3 import Web3

from db.models import AuditEntry
from fedledger.chain.reader import ChainReader
from fedledger.config import Settings
from fedledger.crypto.eip712 import recover_model_signer
from fedledger.devkeys import MODEL_SIGNER_INDEX
from fedledger.domain.tasks import CeleryTaskQueue
from fedledger.payload import decode_weights
from middleware.app import create_app
from tests.middleware.conftest import (
    MODEL,
    OPERATOR,
    ORGS,
    World,
    address_of,
    login,
    make_update,
    post_update,
)


def test_key_rotation_keeps_old_keys_decrypting_open_rounds(world: World) -> None:
    client = world.client
    old = client.get("/v1/keys/current").json()
    sealed_to_old, signature = make_update(world, ORGS[0])
    rotated = client.post("/v1/keys/rotate", headers=world.operator)
    assert rotated.status_code == 200, rotated.text
    new = client.get("/v1/keys/current").json()
    assert new["key_id"] != old["key_id"] and new["is_current"]
    listed = {k["key_id"]: k for k in client.get("/v1/keys").json()}
    assert listed[old["key_id"]]["retired_at"] is not None and not listed[old["key_id"]]["is_current"]
    # An update sealed to the key that was current when the round opened is still accepted.
    assert post_update(world, ORGS[0], sealed_to_old, signature).status_code == 202
    sealed_to_new, signature = make_update(world, ORGS[1])
    assert post_update(world, ORGS[1], sealed_to_new, signature).status_code == 202
    assert client.post("/v1/keys/rotate", headers=login(client, ORGS[0])).status_code == 403


def test_models_download_with_a_signature_that_verifies(world: World) -> None:
    client = world.client
    meta = client.get("/v1/models/current").json()
    weights = client.get(f"/v1/models/{meta['version']}/weights")
    assert weights.status_code == 200
    assert (
        hashlib.sha256(weights.content).hexdigest() == meta["weights_hash"] == weights.headers["X-Model-Hash"]
    )
    assert {k: v.shape for k, v in decode_weights(weights.content).items()} == {
        k: v.shape for k, v in MODEL.items()
    }
    signer = recover_model_signer(
        meta["signature"],
        chain_id=meta["chain_id"],
        verifying_contract=meta["verifying_contract"],
        version=meta["version"],
        model_hash=bytes.fromhex(meta["weights_hash"]),
    )
    assert signer == meta["signer"] == address_of(MODEL_SIGNER_INDEX)
    assert client.get("/v1/models/999").json()["error"] == "unknown_model"
    assert client.post("/v1/models", content=b"x", headers=world.operator).json()["error"] == "genesis_exists"


def test_signed_package_verifies_offline_with_only_the_servers_address(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    meta = world.client.get("/v1/models/current").json()
    package = world.client.get(f"/v1/models/{meta['version']}/package")
    assert package.status_code == 200
    path = tmp_path / "model.zip"
    path.write_bytes(package.content)
    ok = subprocess.run(
        [sys.executable, "scripts/verify_model_package.py", str(path), "--signer", meta["signer"]],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert meta["weights_hash"] in ok.stdout
    wrong = subprocess.run(
        [sys.executable, "scripts/verify_model_package.py", str(path), "--signer", address_of(ORGS[0])],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 1


def test_rollback_by_an_operator_between_rounds_only(world: World) -> None:
    client = world.client
    state = client.app.state.fl
    from db.models import Round, RoundStatus
    from fedledger.domain import model_versions as models

    with state.sessions.begin() as session:
        parent = models.require_active(session)
        deployments = state.chain().deployments
        models.store_version(
            session,
            state.blobs,
            state.blobs.get(parent.weights_hash),
            signer_key=state.settings.resolved_model_signer_key,
            chain_id=deployments.chain_id,
            verifying_contract=deployments.addresses["ContributionLedger"],
            parent=parent,
        )
    assert client.get("/v1/models/current").json()["version"] == 2
    refused = client.post("/v1/models/1/rollback", headers=world.operator)
    assert refused.status_code == 409 and refused.json()["error"] == "round_in_progress"
    with state.sessions.begin() as session:
        session.get(Round, world.round["id"]).status = RoundStatus.posted
    assert client.post("/v1/models/1/rollback", headers=login(client, ORGS[0])).status_code == 403
    done = client.post("/v1/models/1/rollback", headers=world.operator)
    assert done.status_code == 200 and done.json()["status"] == "active"
    assert client.get("/v1/models/2").json()["status"] == "rolled_back"
    assert client.get("/v1/audit", headers=world.operator).json()[-1]["action"] == "model.rollback"


def test_audit_chain_verifies_and_detects_tampering(world: World, w3: Web3) -> None:
    client = world.client
    # The session chain is shared with suites that anchor their own databases' logs on it: only anchors from
    # this test's blocks on belong to this database (tests/chain/test_audit_anchor.py tests the anchors).
    state = client.app.state.fl
    state._chain = ChainReader(
        state.settings.chain_rpc_url, replace(world.deployments, deploy_block=w3.eth.block_number)
    )
    verified = client.get("/v1/audit/verify", headers=world.operator).json()
    assert verified["ok"] and verified["entries"] >= 8
    with client.app.state.fl.sessions.begin() as session:
        session.execute(update(AuditEntry).where(AuditEntry.id == 3).values(subject="rewritten history"))
    broken = client.get("/v1/audit/verify", headers=world.operator).json()
    assert broken == {
        "ok": False,
        "entries": 2,
        "first_bad_id": 3,
        "reason": "entry content does not match its hash",
        "anchors": 0,
        "anchors_checked": 0,
        # A broken log has no trustworthy tail to report: the walk stops at the first bad entry.
        "unanchored_entries": 0,
        "first_unanchored_id": None,
    }
    assert client.get("/v1/audit/verify", headers=login(client, ORGS[0])).status_code == 403


def test_rounds_one_at_a_time_with_the_chains_parameters(world: World) -> None:
    client = world.client
    current = client.get("/v1/rounds/current").json()
    assert current["id"] == world.round["id"] and current["status"] == "OPEN"
    assert current["strategy"] == "fltrust_guarded" and current["params"]["byzantine_fraction"] == 0.3
    assert current["min_participants"] == 3 and current["quorum"] == 3
    again = client.post("/v1/rounds", json={}, headers=world.operator)
    assert again.status_code == 409 and again.json()["error"] == "round_in_progress"
    assert client.post("/v1/rounds", json={}, headers=login(client, ORGS[0])).status_code == 403


def test_health_readiness_and_metrics(world: World, settings: Settings) -> None:
    client = world.client
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "chain": "ok"}
    metrics = client.get("/metrics").text
    assert 'fedledger_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics
    assert "fedledger_http_request_seconds_bucket" in metrics
    # The same API with its chain and broker pointed at nothing reports each failure.
    broken = settings.model_copy(
        update={"chain_rpc_url": "http://127.0.0.1:9", "broker_url": "redis://127.0.0.1:9/0"}
    )
    with TestClient(create_app(broken, queue=CeleryTaskQueue(broken.resolved_broker_url))) as down:
        response = down.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert (
            checks["database"] == "ok"
            and checks["broker"].startswith("error")
            and checks["chain"].startswith("error")
        )


def test_rate_limits_per_ip_and_per_address_answer_429(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_limit_per_minute_ip": 5, "rate_limit_per_minute_address": 1000})
    with TestClient(create_app(tight, queue=CeleryTaskQueue(tight.resolved_broker_url))) as client:
        statuses = [client.get("/v1/keys/current").status_code for _ in range(7)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]
        limited = client.get("/v1/keys/current")
        assert limited.json()["error"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    per_address = settings.model_copy(
        update={"rate_limit_per_minute_ip": 1000, "rate_limit_per_minute_address": 2}
    )
    with TestClient(
        create_app(per_address, queue=CeleryTaskQueue(per_address.resolved_broker_url))
    ) as client:
        headers = login(client, ORGS[0])
        codes = [client.get("/v1/participants/me", headers=headers).status_code for _ in range(3)]
        assert codes[2] == 429
        # Another wallet from the same IP is not limited by the first one's count.
        assert client.get("/v1/participants/me", headers=login(client, ORGS[1])).status_code != 429


def test_cors_allows_only_configured_origins(client: TestClient) -> None:
    allowed = client.options(
        "/v1/keys/current",
        headers={"Origin": "http://127.0.0.1:8501", "Access-Control-Request-Method": "GET"},
    )
    assert allowed.headers.get("access-control-allow-origin") == "http://127.0.0.1:8501"
    denied = client.options(
        "/v1/keys/current", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in denied.headers


def test_participant_status_says_why_it_may_not_submit(world: World) -> None:
    me = world.client.get("/v1/participants/me", headers=login(world.client, ORGS[0])).json()
    assert me["may_submit"] and me["chain_status"] == "active" and int(me["stake_wei"]) >= 100 * 10**18
    from tests.middleware.conftest import NEVER_ENROLLED

    other = world.client.get("/v1/participants/me", headers=login(world.client, NEVER_ENROLLED))
    assert other.status_code == 404 and other.json()["error"] == "not_registered"


def test_stats_for_the_dashboard(world: World) -> None:
    overview = world.client.get("/v1/stats/overview").json()
    assert overview["participants"] == 6 and overview["model_version"] == 1
    assert overview["current_round"]["status"] == "OPEN"
    assert int(overview["token"]["total_supply"]) >= 10**24 and overview["token"]["symbol"] == "DALLA"
    assert len(world.client.get("/v1/stats/participants").json()) == 6
    assert world.client.get("/v1/stats/rounds").json()[0]["id"] == world.round["id"]


def test_openapi_documents_every_route_with_its_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    submit = spec["paths"]["/v1/rounds/{round_id}/updates"]["post"]
    assert {"400", "401", "403", "404", "409", "413", "422", "429"} <= set(submit["responses"])
    assert submit["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if path.startswith("/v1/"):
                assert "429" in operation["responses"], f"{method.upper()} {path} lacks its 429"


def test_operator_only_routes_refuse_participants(world: World) -> None:
    headers = login(world.client, ORGS[0])
    for method, path in (
        ("post", "/v1/rounds"),
        ("post", "/v1/keys/rotate"),
        ("get", "/v1/audit"),
        ("post", "/v1/models/1/rollback"),
    ):
        response = getattr(world.client, method)(
            path, headers=headers, **({"json": {}} if method == "post" else {})
        )
        assert response.status_code == 403, (path, response.text)
    assert login(world.client, OPERATOR)
