"""Where the tests find the machine's real services.

Redis defaults to the machine's server on 127.0.0.1:6379. ``FEDLEDGER_TEST_REDIS_PORT`` points a run at
another server, so that two checkouts can run their suites side by side without flushing each other's Redis.
The worker platform's tests start a Redis server of their own (tests/worker/conftest.py), which one of them
restarts.
"""

from __future__ import annotations

import os

REDIS_PORT = int(os.environ.get("FEDLEDGER_TEST_REDIS_PORT", "6379"))


def redis_url(db: int, port: int = REDIS_PORT) -> str:
    """URL of database ``db`` on the test Redis server (or on the server at ``port``)."""
    return f"redis://127.0.0.1:{port}/{db}"
