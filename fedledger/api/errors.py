"""The API's refusals as typed exceptions, for every caller of :class:`fedledger.api.client.FedLedgerApi`.

The server answers ``{"error": code, "detail": message}``; :func:`api_error` maps the status and code onto
the subclasses below (the table in :mod:`client.errors` says which is which). They derive from
:class:`ClientError`, the base of everything the organization client raises on purpose, so a program
catches one class, prints the message and exits without a traceback. :mod:`client.errors` re-exports them
next to the SDK's own errors (wallet, data, chain).
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class: an expected failure, with a message that says what to do about it."""

    code: str = "client_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The error's message (what to do about it)."""
        return str(self)


class ConfigurationError(ClientError):
    """A setting is missing or inconsistent (no trusted model signer, dev key on a real chain...)."""

    code = "configuration"


class ApiError(ClientError):
    """The API refused a request (or could not be reached). ``status`` is 0 for network failures."""

    def __init__(self, status: int, code: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{detail} (HTTP {status} {code})" if status else detail, code=code)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class AuthenticationError(ApiError):
    """401: the wallet could not sign in, or the token was refused."""


class ForbiddenError(ApiError):
    """403: signed in, but not allowed to do this."""


class NotRegisteredError(ForbiddenError):
    """The wallet has no organization registration: call ``register`` first."""


class NotEnrolledError(ForbiddenError):
    """The wallet is not enrolled on-chain: stake with ``ensure_enrolled`` (``fedledger client enroll``)."""


class ParticipantBlockedError(ForbiddenError):
    """The participant is suspended, slashed or exited and may not submit."""


class NotFoundError(ApiError):
    """404: no such round, model, or resource."""


class ConflictError(ApiError):
    """409: the request conflicts with the server's state (e.g. a different update was already accepted)."""


class RoundClosedError(ConflictError):
    """409: the round no longer accepts updates (closed, or its deadline passed)."""


class InvalidRequestError(ApiError):
    """400/413/422: the server refused the request's content (wrong model version, too large...)."""


class RateLimitedError(ApiError):
    """429 after every retry: slow down."""


class ServerError(ApiError):
    """5xx after every retry: the server or one of its dependencies is down."""


class ApiUnreachableError(ApiError):
    """The API could not be reached at all (connection refused, DNS, timeouts) after every retry."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "unreachable", detail)


_ROUND_CLOSED = frozenset({"round_not_open", "round_deadline_passed"})
_BLOCKED = frozenset({"participant_suspended", "participant_slashed", "participant_exited"})


def api_error(status: int, code: str, detail: str, *, retry_after: float | None = None) -> ApiError:
    """The typed :class:`ApiError` for a status and the server's error code."""
    cls: type[ApiError]
    if code == "not_registered":
        cls = NotRegisteredError
    elif code == "not_enrolled":
        cls = NotEnrolledError
    elif code in _BLOCKED:
        cls = ParticipantBlockedError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = ForbiddenError
    elif status == 404:
        cls = NotFoundError
    elif status == 409 and code in _ROUND_CLOSED:
        cls = RoundClosedError
    elif status == 409:
        cls = ConflictError
    elif status in (400, 413, 422):
        cls = InvalidRequestError
    elif status == 429:
        cls = RateLimitedError
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status, code, detail, retry_after=retry_after)
