"""The sign-in message's domain: the API's own by default, a dashboard's origin when it asks for one of the
configured FEDLEDGER_SIWE_ALLOWED_DOMAINS, and nothing else (EIP-4361 wallets compare it with the page)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from middleware.app import create_app

KEY = dev_private_key(17)
ADDRESS = Account.from_key(KEY).address


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        siwe_domain="api.example:8000",
        public_url="http://api.example:8000",
        siwe_allowed_domains="dash.example:8501,127.0.0.1:9501",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def sign(message: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=message), KEY).signature.hex().removeprefix("0x")


def test_the_settings_parse_a_comma_separated_list(client: TestClient) -> None:
    assert Settings(siwe_allowed_domains="a:1, b:2").siwe_allowed_domains == ["a:1", "b:2"]


@pytest.mark.parametrize("domain", [None, "dash.example:8501", "127.0.0.1:9501"])
def test_a_message_for_an_accepted_domain_signs_in(client: TestClient, domain: str | None) -> None:
    body = {"address": ADDRESS} | ({"domain": domain} if domain else {})
    challenge = client.post("/v1/auth/nonce", json=body)
    assert challenge.status_code == 200, challenge.text
    message = challenge.json()["message"]
    assert message.startswith(f"{domain or 'api.example:8000'} wants you to sign in")
    assert "URI: http://api.example:8000" in message
    login = client.post("/v1/auth/login", json={"message": message, "signature": sign(message)})
    assert login.status_code == 200, login.text
    assert login.json()["address"] == ADDRESS


def test_an_unlisted_domain_gets_no_challenge(client: TestClient) -> None:
    response = client.post("/v1/auth/nonce", json={"address": ADDRESS, "domain": "evil.example"})
    assert response.status_code == 422
    assert response.json()["error"] == "domain_not_accepted"
    assert "FEDLEDGER_SIWE_ALLOWED_DOMAINS" in response.json()["detail"]


def test_a_message_rewritten_to_an_unlisted_domain_is_refused(client: TestClient) -> None:
    message = client.post("/v1/auth/nonce", json={"address": ADDRESS}).json()["message"]
    forged = message.replace("api.example:8000 wants you", "evil.example wants you", 1)
    response = client.post("/v1/auth/login", json={"message": forged, "signature": sign(forged)})
    assert response.status_code == 401
    assert response.json()["error"] == "wrong_domain"
