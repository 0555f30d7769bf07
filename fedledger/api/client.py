"""The one HTTP client of the fedledger API: organizations, the operator and the dashboard all call it.

Every path the platform serves is spelled here and nowhere else outside the routes; every answer is parsed
into the server's own schemas (:mod:`fedledger.api.schemas`), so callers get typed models, and a renamed
route or field fails the contract test (tests/api/test_client_contract.py) instead of a caller at run time.

- **Retries**: network failures, 5xx and 429 are retried with exponential backoff and jitter (a 429's or
  503's ``Retry-After`` is honoured, capped); every other 4xx is final and raised at once. All the POSTs
  this client sends are safe to repeat: a nonce request issues a fresh nonce, registration is idempotent,
  an update submission with the *same envelope bytes* returns the same receipt, and opening a round while
  one is open is refused (409) rather than opening a second. That is why :meth:`FedLedgerApi.submit_update`
  takes the sealed bytes, never re-seals on retry (sealing is randomized, so a second seal would be a
  different payload and the server would answer 409).
- **Sign-in**: Sign-In with Ethereum. The client checks that the message the server asks it to sign is
  for its own address and for the domain it is talking to (so a look-alike server cannot relay the real
  server's challenge), signs it with EIP-191, and keeps the JWT. A token close to expiry is renewed
  before a request; a ``401 token_expired`` renews it once and repeats the request. Without a wallet (the
  dashboard, whose visitors sign in their browser wallet) a token obtained elsewhere is used as given.
- **Errors**: ``{"error": code, "detail": message}`` bodies become the typed exceptions of
  :mod:`fedledger.api.errors` (:class:`~fedledger.api.errors.ApiError` with ``status``, ``code``,
  ``detail``); an answer that does not fit its schema is ``ApiError`` ``malformed_response``.

Any ``httpx.Client`` can be injected (FastAPI's ``TestClient`` is one), with its ``base_url`` set.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from fedledger.api import paths
from fedledger.api.errors import (
    ApiError,
    ApiUnreachableError,
    AuthenticationError,
    ConfigurationError,
    api_error,
)
from fedledger.api.schemas import (
    ContributionOut,
    ModelOut,
    NonceResponse,
    OverviewOut,
    ParticipantOut,
    ParticipantStatusOut,
    ReceiptOut,
    RewardOut,
    RewardsPage,
    RoundOut,
    RoundStatsOut,
    SecAggAcceptedOut,
    SecAggGroupsOut,
    SecAggOut,
    ServerKeyOut,
    TokenFiguresOut,
    TokenResponse,
)
from fedledger.chain.deployments import Deployments

DEFAULT_API_URL = "http://127.0.0.1:8000"
ENV_API_URL = "FEDLEDGER_API_URL"
UPLOAD_CHUNK = 64 * 1024
# Renew a token this many seconds before it expires rather than have a request refused.
TOKEN_RENEW_MARGIN = 30.0
_NONCE_RETRY_CODES = frozenset({"nonce_replayed", "nonce_expired", "unknown_nonce"})

ProgressCallback = Callable[[int, int], None]
Model = TypeVar("Model", bound=BaseModel)


class Signer(Protocol):
    """What signing in needs of a wallet (the SDK's :class:`client.wallet.Wallet` is one)."""

    @property
    def address(self) -> str:
        """The wallet's 0x address."""

    def sign_message(self, text: str) -> str:
        """EIP-191 ``personal_sign`` of ``text``, 0x-hex."""


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
    """The API, signed in as ``wallet`` when a call needs it. Methods return the server's schemas (bytes for
    weights); ``retry=NO_RETRY`` for a caller that must answer at once (a dashboard page)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        wallet: Signer | None = None,
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
        self.session: TokenResponse | None = None

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
        params: dict[str, Any] | None = None,
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
            if params:
                kwargs["params"] = {k: v for k, v in params.items() if v is not None}
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

    def _request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """A checked request (raises the typed error for any non-2xx), signed in when ``auth``."""
        if not auth:
            return self._checked(self.send(method, path, **kwargs))
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Authorization"] = f"Bearer {self._ensure_token()}"
        response = self.send(method, path, headers=headers, **kwargs)
        if (
            response.status_code == 401
            and self.wallet is not None
            and error_from_response(response).code == "token_expired"
        ):
            self._token = None
            headers["Authorization"] = f"Bearer {self._ensure_token()}"
            response = self.send(method, path, headers=headers, **kwargs)
        return self._checked(response)

    def _parse(self, response: httpx.Response, schema: type[Model]) -> Model:
        self._checked(response)
        try:
            return schema.model_validate_json(response.content)
        except ValidationError as exc:
            raise _malformed(response, schema.__name__, exc) from exc

    def _parse_list(self, response: httpx.Response, schema: type[Model]) -> list[Model]:
        self._checked(response)
        try:
            return TypeAdapter(list[schema]).validate_json(response.content)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise _malformed(response, f"a list of {schema.__name__}", exc) from exc

    def _get(self, path: str, schema: type[Model], *, auth: bool = False, **kwargs: Any) -> Model:
        return self._parse(self._request("GET", path, auth=auth, **kwargs), schema)

    def _get_list(self, path: str, schema: type[Model], *, auth: bool = False, **kwargs: Any) -> list[Model]:
        return self._parse_list(self._request("GET", path, auth=auth, **kwargs), schema)

    # ------------------------------------------------------------------------------------ sign-in
    @property
    def signed_in(self) -> bool:
        """Whether a token is held that is not about to expire."""
        return self._token is not None and time.time() < self._token_expires - TOKEN_RENEW_MARGIN

    def _ensure_token(self) -> str:
        if self.wallet is None and self._token is not None:
            return self._token  # a token from elsewhere (a browser wallet's sign-in): the server judges it
        if not self.signed_in:
            self.login()
        assert self._token is not None
        return self._token

    def use_token(self, token: str, expires_at: datetime | None = None) -> None:
        """Sign the next requests with ``token``, a JWT obtained elsewhere (the dashboard's visitors sign the
        challenge in their own wallet; :meth:`login_with_signature` exchanges it)."""
        self._token = token
        self._token_expires = expires_at.timestamp() if expires_at is not None else time.time() + 60

    def nonce(self, address: str, domain: str | None = None) -> NonceResponse:
        """The server's EIP-4361 challenge for ``address``; ``domain``: the host[:port] of the page asking
        the wallet (omitted: the server's own SIWE domain, which SDK and CLI logins use)."""
        body = {"address": address} | ({"domain": domain} if domain else {})
        return self._parse(self.send("POST", paths.NONCE, json=body), NonceResponse)

    def login_with_signature(self, message: str, signature: str) -> TokenResponse:
        """Exchange a signed challenge for a JWT (not kept: the caller decides where a session lives)."""
        response = self.send("POST", paths.LOGIN, json={"message": message, "signature": signature})
        return self._parse(response, TokenResponse)

    def login(self) -> TokenResponse:
        """Sign in with the wallet (SIWE) and keep the token."""
        if self.wallet is None:
            raise ConfigurationError(
                "signing in needs a wallet: pass wallet= (or --key-file / FEDLEDGER_CLIENT_PRIVATE_KEY)"
            )
        last: AuthenticationError | None = None
        for _ in range(3):
            challenge = self.nonce(self.wallet.address)
            self._check_challenge(challenge.message)
            try:
                session = self.login_with_signature(
                    challenge.message, self.wallet.sign_message(challenge.message)
                )
            except AuthenticationError as exc:
                # A retried login whose first attempt reached the server finds its nonce consumed: new nonce.
                if exc.code in _NONCE_RETRY_CODES:
                    last = exc
                    continue
                raise
            self._token = session.access_token
            self._token_expires = session.expires_at.timestamp()
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

    # ------------------------------------------------------------------------------ organizations
    def register(self, org_name: str, encryption_key_id: str | None = None) -> ParticipantOut:
        """Register (or rename) the signed-in wallet's organization; idempotent."""
        body: dict[str, Any] = {"org_name": org_name}
        if encryption_key_id is not None:
            body["encryption_key_id"] = encryption_key_id
        return self._parse(self._request("POST", paths.PARTICIPANTS, json=body), ParticipantOut)

    def me(self) -> ParticipantStatusOut:
        """The signed-in organization: registration, reputation, on-chain enrollment, whether it may submit."""
        return self._get("/v1/participants/me", ParticipantStatusOut, auth=True)

    def deployments(self) -> Deployments:
        """The contract deployments the API uses (:class:`~fedledger.chain.deployments.DeploymentsError` when
        the document is not one)."""
        response = self._request("GET", "/v1/chain/deployments", auth=False)
        try:
            raw = response.json()
        except ValueError as exc:
            raise _malformed(response, "a deployments document", exc) from exc
        return Deployments.from_dict(raw, source="the API's deployments")

    def current_key(self) -> ServerKeyOut:
        """The server's current encryption key (the one to seal updates for)."""
        return self._get(paths.CURRENT_KEY, ServerKeyOut)

    def current_model(self) -> ModelOut:
        """The active model's metadata and server signature."""
        return self._get("/v1/models/current", ModelOut)

    def model(self, version: int) -> ModelOut:
        """One model version's metadata."""
        return self._get(f"/v1/models/{int(version)}", ModelOut)

    def model_weights(self, version: int) -> bytes:
        """One model version's weights (safetensors bytes, verified by the caller)."""
        return self._request("GET", f"/v1/models/{int(version)}/weights", auth=False).content

    def current_round(self) -> RoundOut:
        """The round in progress (or the latest one); :class:`~fedledger.api.errors.NotFoundError` before the
        first."""
        return self._get("/v1/rounds/current", RoundOut)

    def round(self, round_id: int) -> RoundOut:
        """One round's public record."""
        return self._get(paths.round_path(round_id), RoundOut)

    def submit_update(
        self, round_id: int, envelope: bytes, signature: str, *, progress: ProgressCallback | None = None
    ) -> ReceiptOut:
        """POST the sealed envelope; retried with the same bytes, so a lost answer yields the same receipt."""
        headers = {"X-Update-Signature": signature, "Content-Type": "application/octet-stream"}
        response = self._request(
            "POST",
            paths.updates_path(round_id),
            body=bytes(envelope),
            headers=headers,
            progress=progress,
        )
        return self._parse(response, ReceiptOut)

    def secagg(self, round_id: int) -> SecAggOut:
        """The round's secure-aggregation state as this organization sees it (``mode`` "clear" otherwise)."""
        return self._get(f"{paths.round_path(round_id)}/secagg", SecAggOut, auth=True)

    def secagg_groups(self, round_id: int) -> SecAggGroupsOut:
        """A secure round's groups and their outcomes, as everyone sees them (409 ``clear_round`` for a
        round in the clear mode)."""
        return self._get(f"{paths.round_path(round_id)}/secagg/groups", SecAggGroupsOut)

    def secagg_join(self, round_id: int, signature: str) -> SecAggAcceptedOut:
        """Join a secure round with the signed ``SecAggJoin``."""
        response = self._request(
            "POST", f"{paths.round_path(round_id)}/secagg/join", json={"signature": signature}
        )
        return self._parse(response, SecAggAcceptedOut)

    def secagg_send(self, round_id: int, step: str, body: dict[str, Any]) -> SecAggAcceptedOut:
        """One protocol message (``keys``, ``shares``, ``unmask``; ``masked`` with its vector): retried with the
        same body, which the server takes once (the same message again is a no-op)."""
        response = self._request("POST", f"{paths.round_path(round_id)}/secagg/{step}", json=body)
        return self._parse(response, SecAggAcceptedOut)

    def rewards(self, address: str) -> list[RewardOut]:
        """``address``'s rewards in posted rounds, every page followed, with the Merkle proof to claim each
        and (from servers that can read the chain) its claim status. Signed in: the server serves only the
        wallet's own rewards, or an operator's."""
        rewards: list[RewardOut] = []
        cursor = 0
        while True:
            page = self._get(f"/v1/rewards/{address}", RewardsPage, auth=True, params={"cursor": cursor})
            rewards.extend(page.rewards)
            if page.next_cursor is None:
                return rewards
            if page.next_cursor <= cursor:
                raise ApiError(
                    200, "malformed_response", f"rewards: next_cursor {page.next_cursor} goes back"
                )
            cursor = page.next_cursor

    # ------------------------------------------------------------------------------ the operator
    def upload_genesis(self, weights: bytes) -> ModelOut:
        """Upload the genesis model (operator; safetensors float32); 409 ``genesis_exists`` once there is one."""
        headers = {"Content-Type": "application/octet-stream"}
        return self._parse(
            self._request("POST", paths.MODELS, body=bytes(weights), headers=headers), ModelOut
        )

    def open_round(
        self, duration_seconds: int | None = None, quorum: int | None = None, cohort: list[str] | None = None
    ) -> RoundOut:
        """Open a round on the active model (operator); the server's defaults for what is None. 409 while a
        round is open, so a retried request never opens two. ``cohort``: the invited wallets (only they may
        submit; the round closes early once all of them have)."""
        body = {"duration_seconds": duration_seconds, "quorum": quorum, "cohort": cohort}
        response = self._request("POST", paths.ROUNDS, json={k: v for k, v in body.items() if v is not None})
        return self._parse(response, RoundOut)

    def close_round(self, round_id: int) -> RoundOut:
        """Close an OPEN round now (operator): the worker aggregates the updates it has."""
        return self._parse(self._request("POST", f"/v1/rounds/{int(round_id)}/close"), RoundOut)

    def rollback_model(self, version: int) -> ModelOut:
        """Make an earlier model version active again (operator)."""
        return self._parse(self._request("POST", f"/v1/models/{int(version)}/rollback"), ModelOut)

    # ------------------------------------------------------------------------------ the dashboard's reads
    def overview(self) -> OverviewOut:
        """Headline numbers (``token`` is None while the API cannot reach the chain)."""
        return self._get("/v1/stats/overview", OverviewOut)

    def round_history(self, limit: int = 100) -> list[RoundStatsOut]:
        """The most recent rounds first, with what their close did."""
        return self._get_list("/v1/stats/rounds", RoundStatsOut, params={"limit": limit})

    def contributions(
        self, round_id: int | None = None, address: str | None = None, limit: int = 500
    ) -> list[ContributionOut]:
        """Scored contributions, newest round first (of one round and/or one address when given)."""
        params = {"round_id": round_id, "address": address, "limit": limit}
        return self._get_list("/v1/stats/contributions", ContributionOut, params=params)

    def participants(self) -> list[ParticipantOut]:
        """Every registered organization."""
        return self._get_list("/v1/stats/participants", ParticipantOut)

    def token(self) -> TokenFiguresOut:
        """Supply, stake and treasury as the chain reports them now (503 while the API cannot reach it)."""
        return self._get("/v1/stats/token", TokenFiguresOut)


def _malformed(response: httpx.Response, expected: str, exc: Exception) -> ApiError:
    request = response.request
    return ApiError(
        response.status_code,
        "malformed_response",
        f"{request.method} {request.url.path} must answer {expected}: {str(exc)[:300]}",
    )


def _chunks(body: bytes, progress: ProgressCallback) -> Iterator[bytes]:
    total = len(body)
    progress(0, total)
    for start in range(0, total, UPLOAD_CHUNK):
        chunk = body[start : start + UPLOAD_CHUNK]
        yield chunk
        progress(start + len(chunk), total)
