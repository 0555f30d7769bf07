"""The server's encryption key pairs: generation, key ids, and loading with the algorithm detected.

Clients seal updates to the server's current public key. The server may rotate keys: a key id names
each key so an envelope says which private key opens it, and retired keys can be dropped from the
server's key map once no open round can still hold envelopes sealed to them.

The key id is derived from the public key alone (the first 16 bytes of SHA-256 over its DER
SubjectPublicKeyInfo), so anybody holding the public key computes the same id, and the id does not
depend on PEM line wrapping or comments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from fedledger.crypto.errors import InvalidKey

RSA_KEY_BITS = 3072
# 3072 is what we generate; 4096 is accepted so a site can move to larger keys without a format change.
RSA_ACCEPTED_BITS = frozenset({3072, 4096})
RSA_PUBLIC_EXPONENT = 65537
KEY_ID_BYTES = 16
# A PEM key is a few kilobytes at most; refuse anything larger before handing it to the parser.
MAX_PEM_BYTES = 16 * 1024

PublicKey = rsa.RSAPublicKey | x25519.X25519PublicKey
PrivateKey = rsa.RSAPrivateKey | x25519.X25519PrivateKey


class KeyAlgorithm(StrEnum):
    """How an update's AES-256-GCM key reaches the server. The values are the envelope header's names."""

    rsa_oaep_sha256 = "RSA-OAEP-256"  # RSA 3072, OAEP with SHA-256 (MGF1-SHA256)
    x25519 = "X25519"  # X25519 ECDH + HKDF-SHA256


@dataclass(frozen=True)
class ServerKeyPair:
    """One server key. ``private_pem`` is unencrypted PKCS8: protecting it at rest is the store's job."""

    key_id: str
    algorithm: KeyAlgorithm
    private_pem: bytes
    public_pem: bytes

    def __repr__(self) -> str:
        # Never let the private key reach a log line through a repr.
        return f"ServerKeyPair(key_id={self.key_id!r}, algorithm={self.algorithm.value!r})"


def generate_server_key(algorithm: KeyAlgorithm = KeyAlgorithm.x25519) -> ServerKeyPair:
    """Generate a fresh server key pair of ``algorithm`` (RSA keys are 3072-bit, e = 65537)."""
    algorithm = KeyAlgorithm(algorithm)
    private: PrivateKey
    if algorithm is KeyAlgorithm.rsa_oaep_sha256:
        private = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)
    else:
        private = x25519.X25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServerKeyPair(
        key_id=key_id_of(public_pem), algorithm=algorithm, private_pem=private_pem, public_pem=public_pem
    )


def key_id_of(public_pem: bytes) -> str:
    """The key id of a public key: hex of the first 16 bytes of SHA-256(DER SubjectPublicKeyInfo)."""
    _, key = load_public_key(public_pem)
    return public_key_id(key)


def public_key_id(key: PublicKey) -> str:
    """The key id of a public key: the first ``KEY_ID_BYTES`` of the SHA-256 of its DER encoding, in hex."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:KEY_ID_BYTES].hex()


def load_public_key(public_pem: bytes) -> tuple[KeyAlgorithm, PublicKey]:
    """Parse a SubjectPublicKeyInfo PEM and tell which envelope algorithm it serves.

    Raises :class:`InvalidKey` for anything that is not an RSA (3072/4096-bit) or X25519 public key.
    """
    _check_pem(public_pem, "public")
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKey(
            "not a PEM SubjectPublicKeyInfo public key; pass the server's public key as served by the API"
        ) from exc
    return _classify_public(key), key  # type: ignore[return-value]


def load_private_key(private_pem: bytes) -> tuple[KeyAlgorithm, PrivateKey]:
    """Parse an unencrypted PKCS8 PEM private key and tell which envelope algorithm it serves.

    Parsed keys are cached by PEM bytes: loading an RSA key validates it, which costs more than the
    decryption it is loaded for.
    """
    _check_pem(private_pem, "private")
    return _load_private_cached(bytes(private_pem))


@lru_cache(maxsize=32)
def _load_private_cached(private_pem: bytes) -> tuple[KeyAlgorithm, PrivateKey]:
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKey(
            "not an unencrypted PKCS8 PEM private key; store server keys as generate_server_key() returns them"
        ) from exc
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_size(key.key_size)
        return KeyAlgorithm.rsa_oaep_sha256, key
    if isinstance(key, x25519.X25519PrivateKey):
        return KeyAlgorithm.x25519, key
    raise InvalidKey(f"private key of type {type(key).__name__} is not an RSA or X25519 server key")


def _classify_public(key: object) -> KeyAlgorithm:
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key.key_size)
        return KeyAlgorithm.rsa_oaep_sha256
    if isinstance(key, x25519.X25519PublicKey):
        return KeyAlgorithm.x25519
    raise InvalidKey(f"public key of type {type(key).__name__} is not an RSA or X25519 server key")


def _check_rsa_size(bits: int) -> None:
    if bits not in RSA_ACCEPTED_BITS:
        raise InvalidKey(f"RSA key has {bits} bits; server keys must be 3072 or 4096 bits")


def _check_pem(pem: bytes, kind: str) -> None:
    if not isinstance(pem, bytes | bytearray | memoryview):
        raise InvalidKey(f"{kind} key must be PEM bytes, got {type(pem).__name__}")
    if len(pem) > MAX_PEM_BYTES:
        raise InvalidKey(f"{kind} key PEM is {len(pem)} bytes; a server key PEM is at most {MAX_PEM_BYTES}")
