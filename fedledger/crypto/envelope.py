"""Hybrid encryption of an update payload for the server: the sealed envelope.

Wire format::

    ENVELOPE_MAGIC (4 bytes, b"FLE1")
    header length  (uint32, big-endian, 1..MAX_HEADER_BYTES)
    header         (canonical JSON, ASCII)
    ciphertext     (AES-256-GCM ciphertext followed by its 16-byte tag)

The header is canonical JSON of the :class:`EnvelopeHeader` fields: keys sorted, no whitespace, ASCII
only, integers as JSON integers, ``nonce`` and ``wrapped_key`` as standard padded base64 (RFC 4648 §4).
A header that parses but is not byte-for-byte in canonical form is refused, so one header has exactly
one encoding. The header bytes are the AEAD associated data: altering any field (round, samples,
participant, key id...) makes decryption fail, which binds the cleartext routing fields the server reads
before decrypting to the ciphertext they describe.

The 32-byte AES key reaches the server in one of two ways, named by ``algorithm``:

- ``RSA-OAEP-256``: a random AES key, encrypted with RSA-OAEP (SHA-256, MGF1-SHA-256, no label);
  ``wrapped_key`` is that RSA ciphertext (384 bytes for RSA 3072, 512 for 4096).
- ``X25519``: a fresh ephemeral X25519 key per envelope; ``wrapped_key`` is its raw 32-byte public key.
  The AES key is ``HKDF-SHA256(ikm = shared secret, salt = none (32 zero bytes, RFC 5869),
  info = HKDF_INFO || ephemeral public key || server public key, length = 32)``. The info binds the key to
  both public keys (as ECIES/HPKE do) and is independent of the JSON header, which AES-GCM binds instead.

Each envelope has a fresh random 12-byte nonce, and the AES key is fresh per envelope in both modes, so
a (key, nonce) pair never repeats.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils import is_checksum_address, to_checksum_address

from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.canonical import (
    b64_field,
    canonical_json,
    check_int,
    header_document,
    is_json_int,
    require_canonical,
)
from fedledger.crypto.errors import DecryptionFailed, MalformedEnvelope
from fedledger.crypto.keys import RSA_ACCEPTED_BITS, KeyAlgorithm, load_public_key, public_key_id
from fedledger.crypto.keywrap import KeyHeader, unwrap_key, wrap_new_key

ENVELOPE_MAGIC = b"FLE1"
ENVELOPE_VERSION = 1
MAX_HEADER_BYTES = 4 * 1024
NONCE_BYTES = 12
TAG_BYTES = 16
X25519_KEY_BYTES = 32
HKDF_INFO = b"fedledger update v1"
# AES-GCM in `cryptography` takes at most 2**31 - 1 bytes per call; updates are far smaller.
MAX_PLAINTEXT_BYTES = 2**31 - 1

_PREFIX_BYTES = len(ENVELOPE_MAGIC) + 4
_KEY_ID_RE = re.compile(r"[0-9a-f]{32}")
_WRAPPED_KEY_BYTES: dict[KeyAlgorithm, frozenset[int]] = {
    KeyAlgorithm.rsa_oaep_sha256: frozenset(bits // 8 for bits in RSA_ACCEPTED_BITS),
    KeyAlgorithm.x25519: frozenset({X25519_KEY_BYTES}),
}
# One message for every decryption failure, so a failure reveals nothing about where it happened.
_DECRYPTION_FAILED = (
    "decryption failed: the envelope was sealed to a different key, or its header or ciphertext was "
    "altered; the client must seal the update again"
)


class _RoutedHeader(KeyHeader, Protocol):
    """The header fields every envelope format shares: which key (:class:`KeyHeader`), round, model,
    wallet and claim."""

    @property
    def round_id(self) -> int: ...
    @property
    def model_version(self) -> int: ...
    @property
    def participant(self) -> str: ...
    @property
    def num_samples(self) -> int: ...


def check_routing_fields(header: _RoutedHeader) -> None:
    """Validate the fields every envelope format shares, in a frozen header's ``__post_init__``, turning its
    ``algorithm`` into a :class:`KeyAlgorithm`; :class:`MalformedEnvelope` names the first bad field."""
    try:
        object.__setattr__(header, "algorithm", KeyAlgorithm(header.algorithm))
    except (ValueError, TypeError):
        names = ", ".join(a.value for a in KeyAlgorithm)
        raise MalformedEnvelope(f"unknown algorithm {header.algorithm!r}; expected one of {names}") from None
    if not isinstance(header.key_id, str) or not _KEY_ID_RE.fullmatch(header.key_id):
        raise MalformedEnvelope(f"key_id must be 32 lowercase hex characters, got {header.key_id!r}")
    check_int("round_id", header.round_id, minimum=1)
    check_int("model_version", header.model_version, minimum=0)
    check_int("num_samples", header.num_samples, minimum=1)
    if not isinstance(header.participant, str) or not is_checksum_address(header.participant):
        raise MalformedEnvelope(
            f"participant must be an EIP-55 checksummed 0x address, got {header.participant!r}"
        )
    allowed = _WRAPPED_KEY_BYTES[header.algorithm]
    if not isinstance(header.wrapped_key, bytes) or len(header.wrapped_key) not in allowed:
        sizes = " or ".join(str(n) for n in sorted(allowed))
        raise MalformedEnvelope(f"wrapped_key for {header.algorithm.value} must be {sizes} bytes")


@dataclass(frozen=True)
class EnvelopeHeader:
    """The cleartext header of an envelope. Constructing one validates every field."""

    version: int
    algorithm: KeyAlgorithm
    key_id: str
    round_id: int
    model_version: int
    participant: str
    num_samples: int
    nonce: bytes
    wrapped_key: bytes

    def __post_init__(self) -> None:
        if not is_json_int(self.version) or self.version != ENVELOPE_VERSION:
            raise MalformedEnvelope(
                f"envelope version {self.version!r} is not supported; this server reads version {ENVELOPE_VERSION}"
            )
        check_routing_fields(self)
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_BYTES:
            raise MalformedEnvelope(f"nonce must be {NONCE_BYTES} bytes")

    def to_bytes(self) -> bytes:
        """The canonical header bytes: what goes on the wire and into AES-GCM's associated data."""
        return canonical_json(self)


_HEADER_FIELDS = frozenset(f.name for f in fields(EnvelopeHeader))
_BYTES_FIELDS = frozenset({"nonce", "wrapped_key"})
_INT_FIELDS = frozenset({"version", "round_id", "model_version", "num_samples"})


def seal(
    plaintext: bytes,
    public_pem: bytes,
    *,
    round_id: int,
    model_version: int,
    participant: str,
    num_samples: int,
) -> bytes:
    """Encrypt an update payload for the holder of ``public_pem`` (the server's current key).

    ``participant`` may be given in any valid address case; it is written checksummed. Invalid header
    values raise :class:`MalformedEnvelope` here rather than produce an envelope the server refuses.
    """
    plaintext = _as_bytes(plaintext, "plaintext")
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise MalformedEnvelope(
            f"plaintext is {len(plaintext)} bytes; an envelope holds at most {MAX_PLAINTEXT_BYTES}"
        )
    if not isinstance(participant, str) or not is_valid_address(participant):
        raise MalformedEnvelope(
            f"participant must be a 0x address (EIP-55 if mixed case), got {participant!r}"
        )
    algorithm, public = load_public_key(public_pem)
    aes_key, wrapped_key = wrap_new_key(public, HKDF_INFO)
    nonce = os.urandom(NONCE_BYTES)
    header = EnvelopeHeader(
        version=ENVELOPE_VERSION,
        algorithm=algorithm,
        key_id=public_key_id(public),
        round_id=round_id,
        model_version=model_version,
        participant=to_checksum_address(participant),
        num_samples=num_samples,
        nonce=nonce,
        wrapped_key=wrapped_key,
    )
    header_bytes = header.to_bytes()
    ciphertext = AESGCM(aes_key).encrypt(nonce, plaintext, header_bytes)
    return ENVELOPE_MAGIC + len(header_bytes).to_bytes(4, "big") + header_bytes + ciphertext


def parse_header(envelope: bytes) -> EnvelopeHeader:
    """Validate an envelope's framing and header without decrypting; raises :class:`MalformedEnvelope`."""
    header, _, _ = split_envelope(envelope)
    return header


def split_envelope(envelope: bytes) -> tuple[EnvelopeHeader, bytes, bytes]:
    """Validate the framing and return (header, exact header bytes, ciphertext with tag)."""
    envelope = _as_bytes(envelope, "envelope")
    if len(envelope) < _PREFIX_BYTES:
        raise MalformedEnvelope(
            f"envelope is {len(envelope)} bytes, shorter than its {_PREFIX_BYTES}-byte prefix"
        )
    if envelope[: len(ENVELOPE_MAGIC)] != ENVELOPE_MAGIC:
        raise MalformedEnvelope(
            f"envelope does not start with {ENVELOPE_MAGIC!r}; it is not a fedledger sealed update"
        )
    header_len = int.from_bytes(envelope[len(ENVELOPE_MAGIC) : _PREFIX_BYTES], "big")
    if not 0 < header_len <= MAX_HEADER_BYTES:
        raise MalformedEnvelope(f"header length {header_len} is outside 1..{MAX_HEADER_BYTES} bytes")
    if header_len > len(envelope) - _PREFIX_BYTES:
        raise MalformedEnvelope(f"header length {header_len} runs past the end of the envelope")
    header_bytes = envelope[_PREFIX_BYTES : _PREFIX_BYTES + header_len]
    ciphertext = envelope[_PREFIX_BYTES + header_len :]
    header = _decode_header(header_bytes)
    if len(ciphertext) < TAG_BYTES:
        raise MalformedEnvelope(
            f"ciphertext is {len(ciphertext)} bytes, shorter than the {TAG_BYTES}-byte tag"
        )
    return header, header_bytes, ciphertext


def open_envelope(envelope: bytes, private_keys: Mapping[str, bytes]) -> tuple[EnvelopeHeader, bytes]:
    """Decrypt an envelope with the server key its header names.

    ``private_keys`` maps key id to PKCS8 private PEM (current and not-yet-retired keys). Raises
    :class:`MalformedEnvelope` on bad framing, :class:`UnknownKey` if the key id is not in the map,
    :class:`DecryptionFailed` on any tampering, and :class:`InvalidKey` if the map itself is wrong.
    """
    return open_parts(*split_envelope(envelope), private_keys)


def open_parts(
    header: EnvelopeHeader, header_bytes: bytes, ciphertext: bytes, private_keys: Mapping[str, bytes]
) -> tuple[EnvelopeHeader, bytes]:
    """:func:`open_envelope` of an envelope already split by :func:`split_envelope` (a server that read the
    header before decrypting does not parse it twice). The header bytes are the AEAD associated data, so a
    header that does not belong to the ciphertext fails to decrypt."""
    aes_key = unwrap_key(header, private_keys, HKDF_INFO, _DECRYPTION_FAILED)
    try:
        plaintext = AESGCM(aes_key).decrypt(header.nonce, ciphertext, header_bytes)
    except InvalidTag:
        raise DecryptionFailed(_DECRYPTION_FAILED) from None
    return header, plaintext


def _decode_header(raw: bytes) -> EnvelopeHeader:
    document = header_document(raw, _HEADER_FIELDS, ENVELOPE_VERSION)
    values: dict[str, Any] = {}
    for name, value in document.items():
        if name in _BYTES_FIELDS:
            values[name] = b64_field(name, value)
        elif name in _INT_FIELDS:
            if not is_json_int(value):
                raise MalformedEnvelope(f"header field {name} must be a JSON integer, got {value!r}")
            values[name] = value
        else:
            if not isinstance(value, str):
                raise MalformedEnvelope(f"header field {name} must be a string, got {value!r}")
            values[name] = value
    header = EnvelopeHeader(**values)
    require_canonical(header, raw)
    return header


def _as_bytes(data: object, name: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise MalformedEnvelope(f"{name} must be bytes, got {type(data).__name__}")
