"""Rounds as the API reports them: the one open for updates now, and waiting for one to finish."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from client.errors import (
    ApiUnreachableError,
    NoOpenRoundError,
    NotFoundError,
    RateLimitedError,
    RoundTimeoutError,
    ServerError,
)
from fedledger.api.client import FedLedgerApi
from fedledger.api.schemas import RoundOut

FINAL_ROUND_STATUSES = frozenset({"POSTED", "FAILED"})


def open_round(api: FedLedgerApi, now: datetime | None = None) -> RoundOut:
    """The round accepting updates now, or :class:`NoOpenRoundError`."""
    try:
        round_ = api.current_round()
    except NotFoundError as exc:
        raise NoOpenRoundError("no round has been opened yet; wait for the operator to open one") from exc
    deadline = round_.deadline if round_.deadline.tzinfo else round_.deadline.replace(tzinfo=UTC)
    if round_.status.upper() != "OPEN":
        raise NoOpenRoundError(f"round {round_.id} is {round_.status}; no round accepts updates now")
    if deadline <= (now or datetime.now(UTC)):
        raise NoOpenRoundError(f"round {round_.id}'s deadline {deadline.isoformat()} has passed")
    return round_


def wait_for_round(
    api: FedLedgerApi,
    round_id: int,
    *,
    timeout: float,
    poll_interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> RoundOut:
    """Poll the round until it is POSTED or FAILED; :class:`RoundTimeoutError` after ``timeout`` seconds.

    Transient API failures while waiting are tolerated until the timeout.
    """
    deadline = time.monotonic() + timeout
    last: RoundOut | None = None
    while True:
        try:
            last = api.round(round_id)
            if last.status.upper() in FINAL_ROUND_STATUSES:
                return last
        except (ApiUnreachableError, ServerError, RateLimitedError):
            pass
        if time.monotonic() + poll_interval > deadline:
            status = last.status if last else "unknown"
            raise RoundTimeoutError(f"round {round_id} is still {status} after {timeout:.0f} s")
        sleep(poll_interval)
