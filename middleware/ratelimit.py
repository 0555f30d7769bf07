"""Fixed-window rate limits per address and per client IP, in Redis (shared by every API process)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Protocol

import redis


class RateLimiter(Protocol):
    def hit(self, key: str, limit: int, window_seconds: int = 60) -> tuple[bool, int]:
        """Count one request; return (allowed, seconds until the window resets)."""


class RedisRateLimiter:
    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix

    def hit(self, key: str, limit: int, window_seconds: int = 60) -> tuple[bool, int]:
        window = int(time.time()) // window_seconds
        name = f"{self.prefix}{key}:{window}"
        pipe = self.client.pipeline()
        pipe.incr(name)
        pipe.expire(name, window_seconds + 1)
        count, _ = pipe.execute()
        reset = window_seconds - int(time.time()) % window_seconds
        return int(count) <= limit, reset


class MemoryRateLimiter:
    """For a single API process without Redis (the embedded defaults of ``make run``)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, window_seconds: int = 60) -> tuple[bool, int]:
        window = int(time.time()) // window_seconds
        name = f"{key}:{window}"
        with self._lock:
            self._counts[name] += 1
            count = self._counts[name]
            if len(self._counts) > 100_000:
                stale = [k for k in self._counts if not k.endswith(f":{window}")]
                for k in stale:
                    del self._counts[k]
        return count <= limit, window_seconds - int(time.time()) % window_seconds
