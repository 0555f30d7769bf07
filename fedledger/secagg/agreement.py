"""X25519 key agreement inside a group: pairwise mask seeds and the channels that carry secret shares.

Each member makes two fresh X25519 key pairs per round: a *mask* pair, whose agreement with a group-mate
gives their pairwise mask seed (its private key is what the group shares, so the server can remove a
dropped member's masks), and a *channel* pair, whose agreement keys the AES-256-GCM boxes that carry
shares through the server. Keeping them apart means reconstructing a dropped member's mask key opens no
share box. Every derivation is HKDF-SHA256 with a label naming its use and the group's id.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.secagg.errors import ForgedShare, InvalidMessage

KEY_BYTES = 32
NONCE_BYTES = 12
_RAW = serialization.Encoding.Raw


def new_private_key() -> x25519.X25519PrivateKey:
    """A fresh X25519 private key (one per round and purpose; never reused)."""
    return x25519.X25519PrivateKey.generate()


def private_bytes(key: x25519.X25519PrivateKey) -> bytes:
    """The 32 raw bytes of a private key (what a dropped member's group-mates hold shares of)."""
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def public_bytes(key: x25519.X25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public half."""
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def private_key_from(raw: bytes) -> x25519.X25519PrivateKey:
    """A private key from 32 raw bytes (a reconstructed mask key)."""
    if len(raw) != KEY_BYTES:
        raise InvalidMessage(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
    return x25519.X25519PrivateKey.from_private_bytes(raw)


def exchange(private: x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    """The raw X25519 shared secret with a peer's public key; derive every key from it with the functions
    below (a member computes it once per peer and use)."""
    if len(peer_public) != KEY_BYTES:
        raise InvalidMessage(f"an X25519 public key is {KEY_BYTES} bytes, got {len(peer_public)}")
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        # The all-zero shared secret of a low-order point: a malicious key, refused.
        raise InvalidMessage(f"peer public key is not usable for X25519: {exc}") from exc


def _derive(shared: bytes, label: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label + context).derive(shared)


def pairwise_seed(shared: bytes, group_id: bytes) -> bytes:
    """The 32-byte seed two members share for their pairwise mask (from their mask keys' exchange)."""
    return _derive(shared, b"fedledger/secagg/pair/v1/", group_id)


def seal_share(shared: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``nonce || AES-256-GCM(plaintext)`` for one recipient (from the channel keys' exchange);
    ``associated`` binds sender, recipient and group."""
    key = _derive(shared, b"fedledger/secagg/channel/v1/", associated)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_share(shared: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of :func:`seal_share`; :class:`ForgedShare` if it was altered, swapped or misaddressed."""
    key = _derive(shared, b"fedledger/secagg/channel/v1/", associated)
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise ForgedShare(
            "a share box does not open for this recipient: it was altered, or sent for another member or "
            "group; report the round's relay as faulty"
        ) from None
