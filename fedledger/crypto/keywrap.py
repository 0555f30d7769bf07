"""How an update's AES key reaches the server, in both envelope formats (:mod:`fedledger.crypto.envelope`,
:mod:`fedledger.crypto.chunked`): RSA-OAEP of a random key, or an ephemeral X25519 exchange through HKDF.

The formats differ only in the HKDF ``info`` prefix (each names its own version, so a key derived for one
format never opens the other) and in their failure message; the key handling is this module's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.crypto.errors import DecryptionFailed, InvalidKey, UnknownKey
from fedledger.crypto.keys import KeyAlgorithm, PublicKey, load_private_key, public_key_id

AES_KEY_BYTES = 32
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class KeyHeader(Protocol):
    """What a header of either format says about its key: the server key it was sealed to, and the wrapped
    AES key (the envelope modules' headers carry these and their routing fields)."""

    @property
    def algorithm(self) -> KeyAlgorithm:
        """How the AES key is wrapped (RSA-OAEP or X25519)."""

    @property
    def key_id(self) -> str:
        """The server key's id (:func:`fedledger.crypto.keys.public_key_id`)."""

    @property
    def wrapped_key(self) -> bytes:
        """The RSA-OAEP ciphertext of the AES key, or the ephemeral X25519 public key."""


def wrap_new_key(public: PublicKey, info: bytes) -> tuple[bytes, bytes]:
    """A fresh AES key and what the server needs to recover it (the RSA-OAEP ciphertext, or the ephemeral
    X25519 public key whose exchange derives it with HKDF under ``info``)."""
    if isinstance(public, rsa.RSAPublicKey):
        aes_key = AESGCM.generate_key(bit_length=AES_KEY_BYTES * 8)
        return aes_key, public.encrypt(aes_key, OAEP)
    ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(public)
    except ValueError as exc:  # the all-zero shared secret of a low-order point
        raise InvalidKey("the server's X25519 public key is a low-order point; it cannot be used") from exc
    return _derive(shared, ephemeral_public, public.public_bytes_raw(), info), ephemeral_public


def unwrap_key(header: KeyHeader, private_keys: Mapping[str, bytes], info: bytes, failure: str) -> bytes:
    """The AES key of ``header``, with the server key it names (``private_keys``: key id to PKCS8 PEM).

    Raises :class:`UnknownKey` for a key id not in the map, :class:`InvalidKey` when the map stores a key
    under another key's id, and :class:`DecryptionFailed` with ``failure`` (one message for every such
    failure, so a failure reveals nothing about where it happened) when the key does not open it."""
    private_pem = private_keys.get(header.key_id)
    if private_pem is None:
        raise UnknownKey(header.key_id)
    algorithm, private = load_private_key(private_pem)
    actual_id = public_key_id(private.public_key())
    if actual_id != header.key_id:
        raise InvalidKey(
            f"the server key map stores key {actual_id} under key id {header.key_id}; "
            "rebuild the map with key_id_of(public key) as each key's id"
        )
    if algorithm is not header.algorithm:
        raise DecryptionFailed(failure)
    wrapped = header.wrapped_key
    if isinstance(private, rsa.RSAPrivateKey):
        if len(wrapped) != private.key_size // 8:
            raise DecryptionFailed(failure)
        try:
            aes_key = private.decrypt(wrapped, OAEP)
        except ValueError:
            raise DecryptionFailed(failure) from None
        if len(aes_key) != AES_KEY_BYTES:
            raise DecryptionFailed(failure)
        return aes_key
    try:
        shared = private.exchange(x25519.X25519PublicKey.from_public_bytes(wrapped))
    except ValueError:  # low-order ephemeral point: all-zero shared secret
        raise DecryptionFailed(failure) from None
    return _derive(shared, wrapped, private.public_key().public_bytes_raw(), info)


def _derive(shared: bytes, ephemeral_public: bytes, server_public: bytes, info: bytes) -> bytes:
    # The info binds the key to both public keys (as ECIES/HPKE do) and to the format's version.
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=AES_KEY_BYTES,
        salt=None,
        info=info + ephemeral_public + server_public,
    )
    return hkdf.derive(shared)
