"""Issue 13 item 3: the public development JWT secret (or any short one) signs nothing off the dev chain.

The attack: run the API on a real network (chain id 1 or 137) with ``FEDLEDGER_ENV`` left at development and
no ``FEDLEDGER_JWT_SECRET``, then forge an operator token with the secret everyone can read in the source.
The API refuses to start, at settings validation and from ``fedledger api``, saying what to set.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from fedledger.chain.devnode import free_port
from fedledger.config import DEV_JWT_SECRET, Environment, InsecureConfiguration, Settings
from middleware.app import create_app
from middleware.auth import decode_token
from middleware.errors import ApiError

REAL_KEYS = {
    "aggregator_private_key": "0x" + secrets.token_hex(32),
    "model_signer_private_key": "0x" + secrets.token_hex(32),
}


def forged_operator_token(secret: str, address: str) -> str:
    now = int(time.time())
    claims = {"sub": address, "iss": "fedledger", "aud": "fedledger-api", "iat": now, "exp": now + 600}
    return jwt.encode(claims | {"roles": ["participant", "operator"]}, secret, algorithm="HS256")


@pytest.mark.parametrize("chain_id", [1, 137])
def test_the_dev_secret_is_refused_on_a_real_chain_even_in_development(chain_id: int) -> None:
    settings = Settings(env=Environment.development, chain_id=chain_id, **REAL_KEYS)
    with pytest.raises(InsecureConfiguration) as refused:
        create_app(settings)
    message = str(refused.value)
    assert "FEDLEDGER_JWT_SECRET is the public development default" in message
    assert f"FEDLEDGER_CHAIN_ID={chain_id}" in message and "at least 32 bytes" in message


@pytest.mark.parametrize("chain_id", [1, 137, 31337])
def test_a_secret_under_32_bytes_is_refused_off_the_dev_chain_or_in_production(chain_id: int) -> None:
    env = Environment.production if chain_id == 31337 else Environment.development
    short = Settings(env=env, chain_id=chain_id, jwt_secret="s" * 31, **REAL_KEYS)
    with pytest.raises(InsecureConfiguration, match="FEDLEDGER_JWT_SECRET is 31 bytes"):
        short.check_production()
    # Bytes, not characters: 11 three-byte characters are 33 bytes.
    Settings(env=env, chain_id=chain_id, jwt_secret="€" * 11, **REAL_KEYS).check_production()


def test_a_long_random_secret_starts_and_tokens_forged_with_the_dev_secret_are_refused() -> None:
    settings = Settings(chain_id=137, jwt_secret=secrets.token_urlsafe(48), **REAL_KEYS)
    settings.check_production()
    operator = "0x" + "ab" * 20
    settings = settings.model_copy(update={"operator_addresses": [operator]})
    with pytest.raises(ApiError) as refused:
        decode_token(settings, forged_operator_token(DEV_JWT_SECRET, operator))
    assert refused.value.status == 401 and refused.value.code == "invalid_token"


def test_the_dev_chain_in_development_keeps_its_zero_configuration_defaults() -> None:
    Settings(env=Environment.development, chain_id=31337).check_production()


@pytest.mark.parametrize("chain_id", ["1", "137"])
def test_fedledger_api_refuses_to_start_with_the_dev_secret_on_a_real_chain(
    tmp_path: Path, chain_id: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    env |= {
        "FEDLEDGER_CHAIN_ID": chain_id,
        "FEDLEDGER_DATA_DIR": str(tmp_path / "var"),
        "FEDLEDGER_API_PORT": str(port),
        "FEDLEDGER_AGGREGATOR_PRIVATE_KEY": REAL_KEYS["aggregator_private_key"],
        "FEDLEDGER_MODEL_SIGNER_PRIVATE_KEY": REAL_KEYS["model_signer_private_key"],
    }
    # cwd: a directory without a .env file, so only the environment above configures it.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("fedledger")), "api"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to start: FEDLEDGER_JWT_SECRET is the public development default" in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout
