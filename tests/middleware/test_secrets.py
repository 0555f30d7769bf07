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


class _ChainIdNode:
    """An HTTP JSON-RPC endpoint that answers ``eth_chainId`` with ``chain_id`` (a stand-in for a node of a
    public chain: no public node is reachable from the tests, and Hardhat's chain id is fixed at 31337)."""

    def __init__(self, chain_id: int) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": hex(chain_id)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_dev_secret_is_refused_when_the_node_is_a_real_chain_whatever_fedledger_chain_id_says() -> None:
    """Issue 21.12, the attack: deployments on chain 137 with the template's FEDLEDGER_CHAIN_ID=31337 and no
    secret set. The check trusted the setting, so a token forged with the dev secret was an operator's. The
    API now asks the node for its chain id before it starts."""
    node = _ChainIdNode(137)
    try:
        settings = Settings(env=Environment.development, chain_id=31337, chain_rpc_url=node.url)
        with pytest.raises(InsecureConfiguration) as refused:
            create_app(settings)
    finally:
        node.close()
    message = str(refused.value)
    assert "FEDLEDGER_JWT_SECRET is the public development default" in message
    assert "the node at FEDLEDGER_CHAIN_RPC_URL serves chain 137" in message
    # Pure logic: the node's answer decides even when the setting agrees with it.
    with pytest.raises(InsecureConfiguration, match="public development default"):
        Settings(env=Environment.development, chain_id=137, **REAL_KEYS).check_production(node_chain_id=137)
    Settings(env=Environment.development, chain_id=31337).check_production(node_chain_id=31337)


def test_a_public_dev_account_is_refused_as_operator_off_the_dev_chain() -> None:
    from fedledger.devkeys import dev_private_key
    from tests.middleware.conftest import address_of

    dev_operator = address_of(0)
    assert dev_private_key(0)  # Hardhat's account #0: its key is printed by every `hardhat node`
    real = Settings(chain_id=137, jwt_secret=secrets.token_urlsafe(48), **REAL_KEYS)
    with pytest.raises(InsecureConfiguration, match="public development accounts"):
        real.model_copy(update={"operator_addresses": [dev_operator]}).check_production()
    production = Settings(env=Environment.production, jwt_secret=secrets.token_urlsafe(48), **REAL_KEYS)
    with pytest.raises(InsecureConfiguration, match="public development accounts"):
        production.model_copy(update={"operator_addresses": [dev_operator.lower()]}).check_production()
    # The dev chain in development keeps its dev operator.
    Settings(chain_id=31337, operator_addresses=[dev_operator]).check_production()
    real.model_copy(update={"operator_addresses": ["0x" + "ab" * 20]}).check_production()


def test_the_default_sign_in_domains_leave_out_localhost_in_production() -> None:
    assert Settings(env=Environment.development).siwe_allowed_domains == ["127.0.0.1:8501", "localhost:8501"]
    assert Settings(env=Environment.production).siwe_allowed_domains == []
    # Named explicitly (a compose stack on one machine), they are kept.
    kept = Settings(env=Environment.production, siwe_allowed_domains=["localhost:8501"])
    assert kept.siwe_allowed_domains == ["localhost:8501"]
