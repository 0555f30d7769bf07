"""Typed errors of :mod:`fedledger.crypto`. Each message says what was wrong and what to do about it.

All derive from :class:`CryptoError`, a :class:`ValueError`, so callers that treat any bad input as a
client error can catch one class, while the middleware can map each subclass to its own response
(malformed → 400, unknown key → ask the client to refetch the server key, failed decryption → reject).
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class: an input to a cryptographic operation is invalid or does not verify."""


class InvalidKey(CryptoError):
    """A PEM key cannot be parsed or is of a type or size fedledger does not use."""


class MalformedEnvelope(CryptoError):
    """An envelope's framing or header is structurally invalid; nothing was decrypted."""


class UnknownKey(CryptoError):
    """The envelope names a server key id that is not among the keys offered for decryption."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"envelope is encrypted for server key id {key_id!r}, which is unknown or retired on this server; "
            "fetch the server's current public key and seal the update again"
        )
        self.key_id = key_id


class DecryptionFailed(CryptoError):
    """Authenticated decryption failed: wrong key, or the header or ciphertext was altered."""


class SignatureError(CryptoError):
    """A signature, or the typed data it signs, is malformed and no signer can be recovered."""


class PackageError(CryptoError):
    """A model package is malformed, was altered, or was not signed by the expected signer."""
