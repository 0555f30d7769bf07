"""The HTTP client of the fedledger API: sign-in, retries, typed errors.

- **Retries**: network failures, 5xx and 429 are retried with exponential backoff and jitter (a 429's or
  503's ``Retry-After`` is honoured, capped); every other 4xx is final and raised at once. All the POSTs
  this client sends are safe to repeat: a nonce request issues a fresh nonce, registration is idempotent,
  and an update submission with the *same envelope bytes* returns the same receipt. That is why
  :meth:`FedLedgerApi.submit_update` takes the sealed bytes, never re-seals on retry (sealing is
  randomized, so a second seal would be a different payload and the server would answer 409).
- **Sign-in**: Sign-In with Ethereum. The client checks that the message the server asks it to sign is
  for its own address and for the domain it is talking to (so a look-alike server cannot relay the real
  server's challenge), signs it with EIP-191, and keeps the JWT. A token close to expiry is renewed
  before a request; a ``401 token_expired`` renews it once and repeats the request.
- **Errors**: ``{"error": code, "detail": message}`` bodies become the typed exceptions of
  :mod:`client.errors` (:class:`~client.errors.ApiError` with ``status``, ``code``, ``detail``).

Any ``httpx.Client`` can be injected (FastAPI's ``TestClient`` is one), with its ``base_url`` set.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from client.errors import (
    ApiError,
    ApiUnreachableError,
    AuthenticationError,
    ConfigurationError,
    api_error,
)
from client.wallet import Wallet

DEFAULT_API_URL = "http://127.0.0.1:8000"
ENV_API_URL = "FEDLEDGER_API_URL"
UPLOAD_CHUNK = 64 * 1024
# Renew a token this many seconds before it expires rather than have a request refused.
TOKEN_RENEW_MARGIN = 30.0
_NONCE_RETRY_CODES = frozenset({"nonce_replayed", "nonce_expired", "unknown_nonce"})

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Attempt ``n`` (1-based) that failed waits ``min(max_delay, base_delay * 2**(n-1))`` scaled by a random
    factor in ``[1 - jitter, 1]``; a server's ``Retry-After`` replaces the computed delay (capped at
    ``max_retry_after``). ``max_attempts`` counts the first try.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be in [0, 1]")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay before retrying after failed attempt ``attempt`` (1-based), jittered with ``rng``."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(delay * (1.0 - self.jitter * rng.random()))

    @staticmethod
    def retryable_status(status: int) -> bool:
        """429 and 5xx are worth retrying; every other status is final."""
        return status == 429 or status >= 500


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx response (any body: JSON error shape, FastAPI 422 list, or text)."""
    status = response.status_code
    code, detail = f"http_{status}", response.reason_phrase or f"HTTP {status}"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            detail = text[:300]
    else:
        if isinstance(body, dict):
            if isinstance(body.get("error"), str):
                code = body["error"]
            raw = body.get("detail")
            if isinstance(raw, str):
                detail = raw
            elif raw is not None:  # FastAPI's request validation errors: a list of problems
                detail = str(raw)[:500]
                if status == 422 and code == f"http_{status}":
                    code = "validation_error"
    return api_error(status, code, detail, retry_after=parse_retry_after(response.headers.get("Retry-After")))


def parse_utc(value: Any) -> datetime | None:
    """An ISO-8601 time from the API as an aware datetime (naive means UTC); None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_time(value: Any) -> float | None:
    moment = parse_utc(value)
    return None if moment is None else moment.timestamp()


def _siwe_fields(message: str) -> tuple[str, str, dict[str, str]]:
    """(domain, address, {"Chain ID": ..., ...}) of an EIP-4361 message."""
    lines = message.split("\n")
    suffix = " wants you to sign in with your Ethereum account:"
    if len(lines) < 2 or not lines[0].endswith(suffix):
        raise AuthenticationError(
            0, "malformed_challenge", "the server's sign-in message is not an EIP-4361 message"
        )
    fields = {}
    for line in lines[2:]:
        name, sep, value = line.partition(": ")
        if sep:
            fields[name] = value
    return lines[0][: -len(suffix)], lines[1].strip(), fields


class FedLedgerApi:
    """The API, signed in as ``wallet``. Methods return the decoded JSON bodies (or bytes for weights)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        wallet: Wallet | None = None,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        siwe_domain: str | None = None,
        expected_chain_id: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if http is None:
            http = httpx.Client(base_url=base_url or DEFAULT_API_URL, timeout=timeout, follow_redirects=False)
            self._owns_http = True
        else:
            if base_url is not None:
                http.base_url = httpx.URL(base_url)
            self._owns_http = False
        if not str(http.base_url):
            raise ConfigurationError("the HTTP client needs a base URL (the API's address)")
        self.http = http
        self.wallet = wallet
        self.retry = retry or RetryPolicy()
        # The domain the server's SIWE message must name: by default the host:port this client talks to.
        self.siwe_domain = siwe_domain or urlsplit(str(http.base_url)).netloc
        self.expected_chain_id = expected_chain_id
        self._sleep = sleep
        self._rng = rng or random.SystemRandom()
        self._token: str | None = None
        self._token_expires: float = 0.0
        self.session: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        """The API's base URL."""
        return str(self.http.base_url)

    def close(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> FedLedgerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ transport
    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> httpx.Response:
        """One request with the retry policy; returns the final response (any status but 429/5xx
        unless the retries ran out). Network failures that outlast the retries raise
        :class:`ApiUnreachableError`."""
        attempt = 0
        while True:
            attempt += 1
            kwargs: dict[str, Any] = {"headers": dict(headers or {})}
            if json is not None:
                kwargs["json"] = json
            elif body is not None:
                if progress is None:
                    kwargs["content"] = body
                else:
                    kwargs["content"] = _chunks(body, progress)
                    kwargs["headers"]["Content-Length"] = str(len(body))
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retry.max_attempts:
                    raise ApiUnreachableError(
                        f"cannot reach the API at {self.base_url} ({method} {path}): {type(exc).__name__}: {exc}; "
                        f"gave up after {attempt} attempts"
                    ) from exc
                self._sleep(self.retry.backoff(attempt, self._rng))
                continue
            if not self.retry.retryable_status(response.status_code) or attempt >= self.retry.max_attempts:
                return response
            delay = parse_retry_after(response.headers.get("Retry-After"))
            delay = (
                self.retry.backoff(attempt, self._rng)
                if delay is None
                else min(delay, self.retry.max_retry_after)
            )
            response.close()
            self._sleep(delay)

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        raise error_from_response(response)

    def _json(self, response: httpx.Response) -> Any:
        self._checked(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "malformed_response", f"the API answered non-JSON: {exc}"
            ) from exc

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """A checked request (raises the typed error for any non-2xx), signed in when ``auth``."""
        if not auth:
            return self._checked(self.send(method, path, **kwargs))
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Authorization"] = f"Bearer {self._ensure_token()}"
        response = self.send(method, path, headers=headers, **kwargs)
        if response.status_code == 401 and error_from_response(response).code == "token_expired":
            self._token = None
            headers["Authorization"] = f"Bearer {self._ensure_token()}"
            response = self.send(method, path, headers=headers, **kwargs)
        return self._checked(response)

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        body = self._json(response)
        if not isinstance(body, dict):
            raise ApiError(
                response.status_code,
                "malformed_response",
                f"{response.request.method} {response.request.url.path} must answer a JSON object",
            )
        return body

    def get_json(self, path: str, *, auth: bool = False) -> Any:
        """The decoded JSON body of ``GET path`` (any JSON value)."""
        return self._json(self.request("GET", path, auth=auth))

    def get_object(self, path: str, *, auth: bool = False) -> dict[str, Any]:
        """The JSON object ``GET path`` answers (:class:`ApiError` ``malformed_response`` for anything else)."""
        return self._object(self.request("GET", path, auth=auth))

    # ------------------------------------------------------------------------------------ sign-in
    @property
    def signed_in(self) -> bool:
        """Whether a token is held that is not about to expire."""
        return self._token is not None and time.time() < self._token_expires - TOKEN_RENEW_MARGIN

    def _ensure_token(self) -> str:
        if not self.signed_in:
            self.login()
        assert self._token is not None
        return self._token

    def login(self) -> dict[str, Any]:
        """Sign in with the wallet (SIWE) and keep the token; returns ``{access_token, expires_at, address, roles}``."""
        if self.wallet is None:
            raise ConfigurationError(
                "signing in needs a wallet: pass wallet= (or --key-file / FEDLEDGER_CLIENT_PRIVATE_KEY)"
            )
        last: AuthenticationError | None = None
        for _ in range(3):
            challenge = self._object(
                self.send("POST", "/v1/auth/nonce", json={"address": self.wallet.address})
            )
            message = challenge.get("message")
            if not isinstance(message, str):
                raise ApiError(200, "malformed_response", "the nonce response has no message to sign")
            self._check_challenge(message)
            response = self.send(
                "POST",
                "/v1/auth/login",
                json={"message": message, "signature": self.wallet.sign_message(message)},
            )
            try:
                session = self._object(response)
            except AuthenticationError as exc:
                # A retried login whose first attempt reached the server finds its nonce consumed: new nonce.
                if exc.code in _NONCE_RETRY_CODES:
                    last = exc
                    continue
                raise
            token = session.get("access_token")
            if not isinstance(token, str):
                raise ApiError(200, "malformed_response", "the login response has no access token")
            self._token = token
            self._token_expires = _parse_time(session.get("expires_at")) or time.time() + 60
            self.session = session
            return session
        assert last is not None
        raise last

    def _check_challenge(self, message: str) -> None:
        assert self.wallet is not None
        domain, address, fields = _siwe_fields(message)
        if domain != self.siwe_domain:
            raise AuthenticationError(
                0,
                "wrong_domain",
                f"the server asked to sign in to {domain!r}, but this client talks to {self.siwe_domain!r}; "
                "refusing to sign (set the expected SIWE domain if the API sits behind a proxy with another name)",
            )
        if address.lower() != self.wallet.address.lower():
            raise AuthenticationError(
                0, "wrong_address", f"the sign-in message is for {address}, not {self.wallet.address}"
            )
        if self.expected_chain_id is not None and fields.get("Chain ID") != str(self.expected_chain_id):
            raise AuthenticationError(
                0,
                "wrong_chain",
                f"the sign-in message is for chain {fields.get('Chain ID')}, expected {self.expected_chain_id}",
            )

    def logout(self) -> None:
        """Forget the token (the next signed-in request signs in again)."""
        self._token = None
        self._token_expires = 0.0

    # ------------------------------------------------------------------------------------ endpoints
    def register(self, org_name: str, encryption_key_id: str | None = None) -> dict[str, Any]:
        """Register (or rename) the signed-in wallet's organization; idempotent."""
        body: dict[str, Any] = {"org_name": org_name}
        if encryption_key_id is not None:
            body["encryption_key_id"] = encryption_key_id
        return self._object(self.request("POST", "/v1/participants", json=body))

    def me(self) -> dict[str, Any]:
        """The signed-in organization's participant record (``GET /v1/participants/me``)."""
        return self.get_object("/v1/participants/me", auth=True)

    def deployments(self) -> dict[str, Any]:
        """The contract deployments the API uses (``GET /v1/chain/deployments``)."""
        return self.get_object("/v1/chain/deployments")

    def current_key(self) -> dict[str, Any]:
        """The server's current encryption key (``public_key_pem``, ``key_id``)."""
        return self.get_object("/v1/keys/current")

    def current_model(self) -> dict[str, Any]:
        """The active model's metadata."""
        return self.get_object("/v1/models/current")

    def model(self, version: int) -> dict[str, Any]:
        """One model version's metadata."""
        return self.get_object(f"/v1/models/{int(version)}")

    def model_weights(self, version: int) -> bytes:
        """One model version's weights (safetensors bytes, verified by the caller)."""
        return self.request("GET", f"/v1/models/{int(version)}/weights", auth=False).content

    def current_round(self) -> dict[str, Any]:
        """The round in progress (or the latest one)."""
        return self.get_object("/v1/rounds/current")

    def round(self, round_id: int) -> dict[str, Any]:
        """One round's public record."""
        return self.get_object(f"/v1/rounds/{int(round_id)}")

    def submit_update(
        self, round_id: int, envelope: bytes, signature: str, *, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """POST the sealed envelope; retried with the same bytes, so a lost answer yields the same receipt."""
        headers = {"X-Update-Signature": signature, "Content-Type": "application/octet-stream"}
        return self._object(
            self.request(
                "POST",
                f"/v1/rounds/{int(round_id)}/updates",
                body=bytes(envelope),
                headers=headers,
                progress=progress,
            )
        )

    def rewards(self, address: str) -> list[dict[str, Any]]:
        """``[{round_id, amount_wei, proof, claimed, claimable_at, status}]`` of ``address`` (signed in: the
        server serves only the wallet's own rewards, or an operator's), every page of
        ``GET /v1/rewards/{address}`` followed."""
        rewards: list[dict[str, Any]] = []
        cursor = 0
        while True:
            page = self._json(self.request("GET", f"/v1/rewards/{address}?cursor={cursor}"))
            if not isinstance(page, dict) or not isinstance(page.get("rewards"), list):
                raise ApiError(
                    200, "malformed_response", "GET /v1/rewards must answer {rewards, next_cursor}"
                )
            rewards.extend(page["rewards"])
            next_cursor = page.get("next_cursor")
            if next_cursor is None:
                return rewards
            if not isinstance(next_cursor, int) or next_cursor <= cursor:
                raise ApiError(200, "malformed_response", f"GET /v1/rewards: bad next_cursor {next_cursor!r}")
            cursor = next_cursor


def _chunks(body: bytes, progress: ProgressCallback) -> Iterator[bytes]:
    total = len(body)
    progress(0, total)
    for start in range(0, total, UPLOAD_CHUNK):
        chunk = body[start : start + UPLOAD_CHUNK]
        yield chunk
        progress(start + len(chunk), total)
