"""The API client's retry policy and error mapping, on an httpx MockTransport (the only mocked test:
everything else in this suite talks to the real API)."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import pytest

from client.errors import (
    ApiError,
    ApiUnreachableError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotEnrolledError,
    NotFoundError,
    RateLimitedError,
    RoundClosedError,
    ServerError,
)
from fedledger.api.client import FedLedgerApi, RetryPolicy, parse_retry_after

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*steps: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = steps[min(len(seen), len(steps)) - 1]
        if isinstance(step, Exception):
            raise step
        return step

    return handler, seen


def api_for(handler: Handler, policy: RetryPolicy | None = None) -> tuple[FedLedgerApi, list[float]]:
    sleeps: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://api.test")
    return FedLedgerApi(
        http=http, retry=policy or RetryPolicy(), sleep=sleeps.append, rng=random.Random(0)
    ), sleeps


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": f"{code} happened"}, headers=headers)


ROUND = {
    "id": 1,
    "status": "OPEN",
    "model_version": 1,
    "opened_at": "2026-12-01T10:00:00Z",
    "deadline": "2026-12-01T11:00:00Z",
    "quorum": 3,
    "cohort": None,
    "min_participants": 2,
    "strategy": "trimmed_mean",
    "submissions": 0,
    "extensions": 0,
    "closed_at": None,
    "failure_reason": None,
    "params": {},
}
OK = httpx.Response(200, json=ROUND)


def test_5xx_is_retried_with_exponential_backoff_and_jitter() -> None:
    handler, seen = scripted(
        error(503, "chain_unavailable"), error(502, "bad_gateway"), error(500, "boom"), OK
    )
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=3.0, jitter=0.5)
    api, sleeps = api_for(handler, policy)
    assert (
        api.round(1).model_dump(mode="json")
        | {"opened_at": ROUND["opened_at"], "deadline": ROUND["deadline"]}
        == ROUND
    )
    assert len(seen) == 4 and len(sleeps) == 3
    # attempt n waits base * 2**(n-1), capped at max_delay, scaled by a factor in [1 - jitter, 1]
    for attempt, slept in enumerate(sleeps, start=1):
        ceiling = min(3.0, 2 ** (attempt - 1))
        assert 0.5 * ceiling <= slept <= ceiling
    assert len(set(sleeps)) == 3  # jittered, not a fixed schedule


def test_429_honours_retry_after() -> None:
    handler, seen = scripted(error(429, "rate_limited", {"Retry-After": "7"}), OK)
    api, sleeps = api_for(handler)
    api.round(1)
    assert sleeps == [7.0] and len(seen) == 2
    capped, _ = scripted(error(429, "rate_limited", {"Retry-After": "100000"}), OK)
    api, sleeps = api_for(capped, RetryPolicy(max_retry_after=60))
    api.round(1)
    assert sleeps == [60.0]


def test_retries_run_out_into_typed_errors() -> None:
    handler, seen = scripted(error(503, "chain_unavailable"))
    api, sleeps = api_for(handler, RetryPolicy(max_attempts=3))
    with pytest.raises(ServerError) as server:
        api.round(1)
    assert (server.value.status, server.value.code, len(seen), len(sleeps)) == (
        503,
        "chain_unavailable",
        3,
        2,
    )
    handler, _ = scripted(error(429, "rate_limited", {"Retry-After": "1"}))
    api, _ = api_for(handler, RetryPolicy(max_attempts=2))
    with pytest.raises(RateLimitedError) as limited:
        api.round(1)
    assert limited.value.retry_after == 1.0


def test_network_errors_are_retried_then_reported() -> None:
    handler, seen = scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), OK)
    api, sleeps = api_for(handler)
    assert api.round(1).id == 1 and len(seen) == 3 and len(sleeps) == 2
    handler, seen = scripted(httpx.ConnectError("refused"))
    api, _ = api_for(handler, RetryPolicy(max_attempts=4))
    with pytest.raises(ApiUnreachableError, match="cannot reach the API at http://api.test") as unreachable:
        api.round(1)
    assert unreachable.value.status == 0 and len(seen) == 4


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (error(400, "malformed_envelope"), InvalidRequestError),
        (error(401, "bad_signature"), AuthenticationError),
        (error(403, "not_enrolled"), NotEnrolledError),
        (error(404, "unknown_round"), NotFoundError),
        (error(409, "round_not_open"), RoundClosedError),
        (error(409, "conflicting_update"), ConflictError),
        (error(413, "too_large"), InvalidRequestError),
        (
            httpx.Response(422, json={"detail": [{"loc": ["body"], "msg": "field required"}]}),
            InvalidRequestError,
        ),
    ],
)
def test_other_4xx_are_final_and_typed(response: httpx.Response, expected: type) -> None:
    handler, seen = scripted(response, OK)
    api, sleeps = api_for(handler)
    with pytest.raises(expected) as raised:
        api.round(1)
    assert len(seen) == 1 and sleeps == []
    assert raised.value.status == response.status_code and raised.value.detail


def test_an_update_post_is_retried_with_the_same_bytes() -> None:
    handler, seen = scripted(
        httpx.RemoteProtocolError("connection reset"),
        error(503, "x"),
        httpx.Response(
            202,
            json={
                "receipt_id": "r1",
                "round_id": 3,
                "participant": "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
                "payload_hash": "0xab",
                "num_samples": 10,
                "received_at": "2026-12-01T10:00:00Z",
                "replayed": False,
            },
        ),
    )
    api, _ = api_for(handler)
    api._token, api._token_expires = "t", float("inf")  # signed in (sign-in itself is tested on the real API)
    progress: list[tuple[int, int]] = []
    envelope = bytes(range(256)) * 1000
    receipt = api.submit_update(
        3, envelope, "0xsig", progress=lambda sent, total: progress.append((sent, total))
    )
    assert receipt.receipt_id == "r1" and not receipt.replayed
    bodies = [request.read() for request in seen]
    assert len(bodies) == 3 and all(body == envelope for body in bodies)
    assert all(
        r.headers["X-Update-Signature"] == "0xsig" and r.headers["Content-Length"] == str(len(envelope))
        for r in seen
    )
    assert progress[-1] == (len(envelope), len(envelope))


def test_non_json_error_bodies_still_map() -> None:
    handler, _ = scripted(httpx.Response(502, text="<html>Bad Gateway</html>"))
    api, _ = api_for(handler, RetryPolicy(max_attempts=1))
    with pytest.raises(ServerError) as raised:
        api.round(1)
    assert raised.value.code == "http_502" and "Bad Gateway" in raised.value.detail


def test_retry_after_parsing() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_an_answer_that_does_not_fit_its_schema_is_a_malformed_response() -> None:
    handler, _ = scripted(httpx.Response(200, json={"id": 1, "status": "OPEN"}))
    api, _ = api_for(handler)
    with pytest.raises(ApiError) as raised:
        api.round(1)
    assert raised.value.code == "malformed_response" and "RoundOut" in raised.value.detail
