"""Where the tests find the machine's real services.

Redis defaults to the machine's server on 127.0.0.1:6379. ``FEDLEDGER_TEST_REDIS_PORT`` points a run at
another server, so that two checkouts can run their suites side by side without flushing (or, in the
restart test, shutting down) each other's Redis.
"""

from __future__ import annotations

import os

REDIS_PORT = int(os.environ.get("FEDLEDGER_TEST_REDIS_PORT", "6379"))


def redis_url(db: int) -> str:
    """URL of database ``db`` on the test Redis server."""
    return f"redis://127.0.0.1:{REDIS_PORT}/{db}"
