"""Settings refuse development secrets and keys outside development."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account

from fedledger.config import Environment, InsecureConfiguration, Settings
from fedledger.devkeys import dev_private_key, is_dev_private_key


def test_dev_keys_are_hardhats_well_known_accounts() -> None:
    assert Account.from_key(dev_private_key(0)).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert is_dev_private_key(dev_private_key(5)[2:].upper())
    assert not is_dev_private_key("0x" + secrets.token_hex(32))


def test_development_on_the_dev_chain_runs_with_defaults() -> None:
    Settings(env=Environment.development).check_production()


def test_production_refuses_the_default_jwt_secret_and_dev_keys() -> None:
    settings = Settings(
        env=Environment.production,
        aggregator_private_key=dev_private_key(1),
        model_signer_private_key="0x" + secrets.token_hex(32),
    )
    with pytest.raises(InsecureConfiguration) as refused:
        settings.check_production()
    message = str(refused.value)
    assert "FEDLEDGER_JWT_SECRET is the public development default" in message
    assert "FEDLEDGER_AGGREGATOR_PRIVATE_KEY is a well-known development key" in message
    assert "MODEL_SIGNER" not in message


def test_a_public_chain_refuses_dev_keys_even_in_development() -> None:
    settings = Settings(chain_id=1, aggregator_private_key=dev_private_key(1), model_signer_private_key="")
    with pytest.raises(InsecureConfiguration, match="MODEL_SIGNER_PRIVATE_KEY is empty"):
        settings.check_production()


def test_production_with_real_secrets_starts() -> None:
    Settings(
        env=Environment.production,
        jwt_secret=secrets.token_urlsafe(48),
        aggregator_private_key="0x" + secrets.token_hex(32),
        model_signer_private_key="0x" + secrets.token_hex(32),
    ).check_production()


def test_csv_lists_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLEDGER_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
