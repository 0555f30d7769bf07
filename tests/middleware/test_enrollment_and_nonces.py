"""Issue 13 item 4: nobody grows the database for free.

Attacks, each refused: 500 nonce requests leave 500 rows forever; a nonce issued for one address logs in
another; throw-away wallets without stake register (a participant row, an audit entry, a public listing
each); ``/v1/auth/nonce`` and ``/v1/participants`` called without a per-IP limit.
"""

from __future__ import annotations

import time

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from web3 import Web3

from db.models import AuditEntry, AuthNonce, Participant
from fedledger.chain.deployments import Deployments
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from fedledger.domain.tasks import CeleryTaskQueue
from middleware.app import create_app
from middleware.auth import issue_token, siwe
from tests.middleware.conftest import ORGS, address_of, ensure_enrolled, login, room_in_rate_window

A, B = ORGS[0], ORGS[1]


def app_client(settings: Settings, **changes: object) -> TestClient:
    changed = settings.model_copy(update=changes)
    return TestClient(create_app(changed, queue=CeleryTaskQueue(changed.resolved_broker_url)))


def count(client: TestClient, model: type, *where: object) -> int:
    with client.app.state.fl.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def nonce_for(client: TestClient, address: str) -> dict:
    response = client.post("/v1/auth/nonce", json={"address": address})
    assert response.status_code == 200, response.text
    return response.json()


def sign(message: str, key: str) -> str:
    return Account.sign_message(encode_defunct(text=message), key).signature.to_0x_hex()


def test_expired_nonces_are_purged_so_500_requests_do_not_leave_500_rows(settings: Settings) -> None:
    with app_client(settings, nonce_ttl_seconds=2, rate_limit_per_minute_ip_nonce=10_000) as client:
        for i in range(500):
            nonce_for(client, Account.create().address if i % 2 else address_of(A))
        assert count(client, AuthNonce) > 0
        time.sleep(2.2)
        fresh = nonce_for(client, address_of(A))
        # Issuing purges every expired nonce: only the one just issued is left, and it still logs in.
        assert count(client, AuthNonce) == 1
        response = client.post(
            "/v1/auth/login",
            json={"message": fresh["message"], "signature": sign(fresh["message"], dev_private_key(A))},
        )
        assert response.status_code == 200, response.text


def test_a_nonce_issued_for_one_address_cannot_log_in_another(client: TestClient) -> None:
    issued = nonce_for(client, address_of(A))
    # B takes A's nonce into a message naming B, signs it with B's key: a valid signature over a message the
    # server never issued for B.
    parsed = siwe.SiweMessage.from_message(issued["message"])
    stolen = parsed.model_copy(update={"address": address_of(B)}).prepare_message()
    response = client.post(
        "/v1/auth/login", json={"message": stolen, "signature": sign(stolen, dev_private_key(B))}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "nonce_address_mismatch"
    assert address_of(B) in response.json()["detail"]
    # The refused attempt did not consume it: A still signs in with its own nonce.
    response = client.post(
        "/v1/auth/login",
        json={"message": issued["message"], "signature": sign(issued["message"], dev_private_key(A))},
    )
    assert response.status_code == 200 and response.json()["address"] == address_of(A)


def test_nonce_requests_are_limited_per_ip_whatever_the_address(settings: Settings) -> None:
    with app_client(settings, rate_limit_per_minute_ip_nonce=5) as client:
        room_in_rate_window(20)
        codes = [
            client.post("/v1/auth/nonce", json={"address": Account.create().address}).status_code
            for _ in range(7)
        ]
        assert codes == [200] * 5 + [429] * 2
        assert count(client, AuthNonce) == 5
        limited = client.post("/v1/auth/nonce", json={"address": address_of(A)})
        assert limited.json()["error"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        # Other calls from that IP keep their own, larger budget.
        assert client.get("/v1/keys/current").status_code == 200


def test_participants_calls_are_limited_per_ip_whatever_the_wallet(settings: Settings) -> None:
    with app_client(settings, rate_limit_per_minute_ip=5, rate_limit_per_minute_address=1000) as client:
        room_in_rate_window(20)
        # One token per throw-away wallet, so that only the per-IP limit can stop them.
        tokens = [issue_token(settings, Account.create().address)[0] for _ in range(7)]
        codes = [
            client.get("/v1/participants/me", headers={"Authorization": f"Bearer {t}"}).status_code
            for t in tokens
        ]
        assert codes == [404] * 5 + [429] * 2
    with app_client(settings, rate_limit_per_minute_ip_register=3) as client:
        room_in_rate_window(20)
        tokens = [issue_token(settings, Account.create().address)[0] for _ in range(5)]
        codes = [
            client.post(
                "/v1/participants", json={"org_name": "spam"}, headers={"Authorization": f"Bearer {t}"}
            ).status_code
            for t in tokens
        ]
        assert codes == [403] * 3 + [429] * 2


def test_throw_away_wallets_without_stake_create_no_participant_audit_entry_or_listing(
    client: TestClient, w3: Web3, deployments: Deployments
) -> None:
    for _ in range(40):
        wallet = Account.create()
        challenge = nonce_for(client, wallet.address)
        token = client.post(
            "/v1/auth/login",
            json={"message": challenge["message"], "signature": sign(challenge["message"], wallet.key)},
        ).json()["access_token"]
        response = client.post(
            "/v1/participants", json={"org_name": "sybil"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "not_enrolled"
        assert "ParticipantRegistry.enroll" in response.json()["detail"]
    assert count(client, Participant) == 0
    assert count(client, AuditEntry, AuditEntry.action.like("participant.%")) == 0
    assert client.get("/v1/stats/participants").json() == []
    assert client.get("/v1/stats/overview").json()["participants"] == 0

    # An organization with stake registers, once, and is listed.
    ensure_enrolled(w3, deployments, A)
    headers = login(client, A)
    for _ in range(2):
        response = client.post("/v1/participants", json={"org_name": "Clinic A"}, headers=headers)
        assert response.status_code == 200, response.text
    assert count(client, Participant) == 1
    assert count(client, AuditEntry, AuditEntry.action == "participant.register") == 1
    assert [p["address"] for p in client.get("/v1/stats/participants").json()] == [address_of(A)]
