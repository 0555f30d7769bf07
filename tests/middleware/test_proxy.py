"""Issue 13 item 6: ``X-Forwarded-For`` is believed only from configured proxies (none by default).

The attack: a client on the API's host (or behind any local hop) sends a different ``X-Forwarded-For`` with
each request, so that uvicorn's default (trust forwarded headers from local peers) gives each request a new
client IP and the per-IP limit never trips. The API runs here as operators run it, ``fedledger api``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fedledger.chain.devnode import free_port
from fedledger.config import Settings
from tests.middleware.conftest import room_in_rate_window

LIMIT = 4


@contextmanager
def fedledger_api(settings: Settings, tmp_path: Path, **extra: str) -> Iterator[str]:
    """``fedledger api`` in a subprocess, configured from ``settings`` through the environment."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")}
    env |= {
        "FEDLEDGER_DATA_DIR": str(settings.data_dir),
        "FEDLEDGER_DATABASE_URL": settings.database_url,
        "FEDLEDGER_REDIS_URL": settings.redis_url,
        "FEDLEDGER_REDIS_NAMESPACE": settings.redis_namespace,
        "FEDLEDGER_BROKER_URL": settings.broker_url,
        "FEDLEDGER_CHAIN_RPC_URL": settings.chain_rpc_url,
        "FEDLEDGER_DEPLOYMENTS_FILE": str(settings.deployments_file),
        "FEDLEDGER_API_HOST": "127.0.0.1",
        "FEDLEDGER_API_PORT": str(port),
        "FEDLEDGER_RATE_LIMIT_PER_MINUTE_IP": str(LIMIT),
        "FEDLEDGER_LOG_LEVEL": "warning",
    } | {f"FEDLEDGER_{k.upper()}": v for k, v in extra.items()}
    log = (tmp_path / f"api-{port}.log").open("w")
    # cwd without a .env file: only the environment above configures the server.
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("fedledger")), "api"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fedledger api did not start: {(tmp_path / log.name).read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def keys_current(base: str, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return httpx.get(f"{base}/v1/keys/current", headers=headers, timeout=10).status_code


def test_a_spoofed_x_forwarded_for_does_not_escape_the_per_ip_limit(
    settings: Settings, tmp_path: Path
) -> None:
    with fedledger_api(settings, tmp_path) as base:
        room_in_rate_window(15)
        codes = [keys_current(base, f"198.51.100.{i}") for i in range(LIMIT + 3)]
        assert codes == [200] * LIMIT + [429] * 3
        # Nor does any other forwarded form (the limit is the TCP peer's).
        assert keys_current(base, "203.0.113.9, 198.51.100.200") == 429
        assert keys_current(base, None) == 429


@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.0/8"])
def test_a_configured_proxy_is_believed_and_a_client_cannot_prepend_its_way_out(
    settings: Settings, tmp_path: Path, trusted: str
) -> None:
    with fedledger_api(settings, tmp_path, trusted_proxies=trusted) as base:
        room_in_rate_window(20)
        # Behind the trusted proxy, two clients have a budget each.
        for client in ("198.51.100.1", "198.51.100.2"):
            assert [keys_current(base, client) for _ in range(LIMIT)] == [200] * LIMIT
        # The proxy appends the address it saw; whatever the client wrote before it is not believed.
        spoofed = [keys_current(base, f"10.9.9.{i}, 198.51.100.1") for i in range(3)]
        assert spoofed == [429] * 3
        assert keys_current(base, "198.51.100.3") == 200
