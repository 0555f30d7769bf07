"""Sign-In with Ethereum and JWTs: the happy path and every way a login or a token is refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from middleware.auth import siwe
from tests.middleware.conftest import OPERATOR, address_of, login

ORG = 3


def challenge(client: TestClient, index: int = ORG) -> dict:
    response = client.post("/v1/auth/nonce", json={"address": address_of(index)})
    assert response.status_code == 200, response.text
    return response.json()


def sign(message: str, index: int = ORG) -> str:
    return Account.sign_message(encode_defunct(text=message), dev_private_key(index)).signature.to_0x_hex()


def attempt(client: TestClient, message: str, signature: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/auth/login", json={"message": message, "signature": signature})


def reissued(message: str, **changes: object) -> str:
    """The server's message with some fields changed (a client forging its own message)."""
    parsed = siwe.SiweMessage.from_message(message)
    return parsed.model_copy(update=changes).prepare_message()


def assert_refused(response, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    assert response.json()["error"] == code, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_login_issues_a_token_with_subject_audience_issuer_and_roles(
    client: TestClient, settings: Settings
) -> None:
    c = challenge(client)
    assert f"Nonce: {c['nonce']}" in c["message"] and "Chain ID: 31337" in c["message"]
    assert c["message"].startswith("testserver wants you to sign in with your Ethereum account:")
    response = attempt(client, c["message"], sign(c["message"]))
    assert response.status_code == 200
    body = response.json()
    claims = jwt.decode(
        body["access_token"],
        settings.jwt_secret.get_secret_value(),
        algorithms=["HS256"],
        audience="fedledger-api",
        issuer="fedledger",
    )
    assert claims["sub"] == address_of(ORG) == body["address"]
    assert claims["roles"] == ["participant"]
    assert 0 < claims["exp"] - claims["iat"] <= settings.jwt_ttl_seconds
    operator = jwt.decode(login(client, OPERATOR)["Authorization"][7:], options={"verify_signature": False})
    assert operator["roles"] == ["participant", "operator"]


def test_wrong_signer_is_refused(client: TestClient) -> None:
    c = challenge(client)
    assert_refused(attempt(client, c["message"], sign(c["message"], index=4)), "invalid_signature")


def test_tampered_message_is_refused(client: TestClient) -> None:
    c = challenge(client)
    signature = sign(c["message"])
    tampered = c["message"].replace("take part in", "give away")
    assert_refused(attempt(client, tampered, signature), "invalid_signature")


def test_replayed_nonce_is_refused(client: TestClient) -> None:
    c = challenge(client)
    signature = sign(c["message"])
    assert attempt(client, c["message"], signature).status_code == 200
    assert_refused(attempt(client, c["message"], signature), "nonce_replayed")


def test_unknown_nonce_is_refused(client: TestClient) -> None:
    c = challenge(client)
    forged = reissued(c["message"], nonce="abcdef0123456789abcdef0123456789")
    assert_refused(attempt(client, forged, sign(forged)), "unknown_nonce")


def test_expired_message_is_refused(client: TestClient) -> None:
    c = challenge(client)
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    earlier = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    expired = reissued(c["message"], issued_at=earlier, expiration_time=past)
    assert_refused(attempt(client, expired, sign(expired)), "message_expired")


def test_expired_nonce_is_refused(settings: Settings) -> None:
    from fedledger.domain.tasks import CeleryTaskQueue
    from middleware.app import create_app

    short = settings.model_copy(update={"nonce_ttl_seconds": 1})
    with TestClient(create_app(short, queue=CeleryTaskQueue(short.resolved_broker_url))) as client:
        c = challenge(client)
        time.sleep(1.5)
        response = attempt(client, c["message"], sign(c["message"]))
        assert response.status_code == 401
        assert response.json()["error"] in {"nonce_expired", "message_expired"}


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"domain": "evil.example"}, "wrong_domain"),
        ({"chain_id": 1}, "wrong_chain"),
        ({"uri": "https://evil.example/"}, "wrong_uri"),
    ],
)
def test_messages_for_another_server_or_chain_are_refused(
    client: TestClient, changes: dict, code: str
) -> None:
    c = challenge(client)
    forged = reissued(c["message"], **changes)
    assert_refused(attempt(client, forged, sign(forged)), code)


def test_garbage_is_refused(client: TestClient) -> None:
    assert_refused(attempt(client, "hello", "0x00"), "malformed_message")
    c = challenge(client)
    assert_refused(attempt(client, c["message"], "0x1234"), "invalid_signature")
    assert client.post("/v1/auth/nonce", json={"address": "not-an-address"}).status_code == 422


def _token(settings: Settings, secret: str | None = None, **claims: object) -> str:
    now = int(time.time())
    body = {
        "sub": address_of(ORG),
        "iss": "fedledger",
        "aud": "fedledger-api",
        "iat": now,
        "exp": now + 60,
        "roles": ["participant"],
    } | claims
    return jwt.encode(body, secret or settings.jwt_secret.get_secret_value(), algorithm="HS256")


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda s: _token(s, exp=int(time.time()) - 10, iat=int(time.time()) - 100), "token_expired"),
        (lambda s: _token(s, secret="another-secret-another-secret-another-secret"), "invalid_token"),
        (lambda s: _token(s, aud="someone-else"), "invalid_token"),
        (lambda s: _token(s, iss="someone-else"), "invalid_token"),
        (lambda s: _token(s, sub="not-an-address"), "invalid_token"),
        (lambda s: "not.a.jwt", "invalid_token"),
    ],
)
def test_expired_or_forged_tokens_are_refused(
    client: TestClient, settings: Settings, make, code: str
) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/v1/participants/me", headers={"Authorization": f"Bearer {make(settings)}"})
    assert_refused(response, code)


def test_missing_token_is_refused(client: TestClient) -> None:
    assert_refused(client.get("/v1/participants/me"), "missing_token")


def test_a_token_claiming_operator_gets_no_operator_rights(client: TestClient, settings: Settings) -> None:
    token = _token(settings, roles=["participant", "operator"])
    response = client.post("/v1/keys/rotate", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and response.json()["error"] == "operator_only"


@pytest.mark.parametrize(
    "signature",
    [
        "0x" + "00" * 65,  # r = s = 0: no public key can be recovered
        "0x" + "ff" * 65,  # r, s past the curve order, v = 255
        "0x" + "00" * 64 + "1b",  # zeros with a valid-looking v = 27
        "0x" + "ff" * 64 + "1c",  # r, s past the curve order with v = 28
    ],
)
def test_an_all_zero_or_all_ff_signature_is_a_401_not_a_500(client: TestClient, signature: str) -> None:
    c = challenge(client)
    assert_refused(attempt(client, c["message"], signature), "invalid_signature")
    # The nonce was not consumed by the refusal: the real signature still signs in.
    assert attempt(client, c["message"], sign(c["message"])).status_code == 200
