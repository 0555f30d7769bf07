"""Domain errors: what went wrong, in the domain's words, with a machine-readable code.

Each class names a kind of failure, not a transport: the API maps the kind to an HTTP status
(``middleware/errors.py``), the worker to a failed round or a retry. ``code`` is stable and
machine-readable; ``detail`` says what to do.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal by a domain service."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Malformed(DomainError):
    """The input cannot be parsed (bad encoding, bad framing)."""


class Unauthenticated(DomainError):
    """The caller's proof of identity (a signature) does not hold."""


class Forbidden(DomainError):
    """The caller is known but not allowed to do this (not registered, not enrolled, suspended)."""


class NotFound(DomainError):
    """The named object does not exist."""


class Conflict(DomainError):
    """The request conflicts with the current state (a different payload, a round in progress)."""


class Gone(DomainError):
    """The object exists but no longer accepts this (a closed round, a retired key)."""


class TooLarge(DomainError):
    """The input exceeds a configured size limit."""


class Invalid(DomainError):
    """The input parses but is semantically wrong (shapes, ranges, signatures over other data)."""


class Unavailable(DomainError):
    """A dependency (database, broker, chain) cannot be reached; retrying later may succeed."""
