"""Chunked envelopes (version 2): an update sealed in fixed-size coordinate chunks, so that a worker can read,
authenticate and decrypt only the coordinates it aggregates.

Wire format::

    CHUNKED_MAGIC  (4 bytes, b"FLE2"; version 1 envelopes start with b"FLE1")
    header length  (uint32, big-endian, 1..MAX_HEADER_BYTES)
    header         (canonical JSON, as version 1's: sorted keys, no whitespace, padded base64)
    chunk table    (one 32-byte SHA-256 per sealed chunk, in chunk order)
    sealed chunks  (chunk k: AES-256-GCM ciphertext of its coordinates, then its 16-byte tag)

The *head* is everything before the sealed chunks. Its SHA-256 is what the organization's EIP-712
``Update.payloadHash`` signs (a version 1 envelope signs the SHA-256 of all of it): the signature covers every
header field and every chunk's hash, so a worker that reads the head and its own chunks checks that the
wallet signed exactly those bytes without reading the rest. The blob store still keys the whole envelope by
its SHA-256.

The plaintext is the update as one vector (the model's tensors flattened in name order, whose names and
shapes ``layout`` hashes: :func:`coordinate_order`, :func:`layout_hash`), as little-endian float32 (``dtype`` ``F32``) or float16
(``F16``) values. Chunk k holds coordinates ``[k * chunk_coords, min((k + 1) * chunk_coords, size))``; every
sealed chunk but the last is ``chunk_coords * itemsize + 16`` bytes, so a chunk's offset follows from the
header alone. Each chunk is sealed on its own under the envelope's fresh AES key (wrapped for the server as
in version 1; X25519's HKDF info is ``HKDF_INFO_V2``) with nonce = k as 12 big-endian bytes (the key is
never reused, so neither is a (key, nonce) pair) and associated data = header bytes || k as 8 big-endian
bytes: a chunk moved to another position, or into another envelope, fails to decrypt, and the chunk table
catches it before any decryption is tried.

Why the table as well as AES-GCM's tags: the server holds the AES key, so a tag proves nothing against the
server itself; the wallet's signature over the table does (a sealed update the server altered no longer
matches what its organization signed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils import to_checksum_address

from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.canonical import (
    MAX_HEADER_INT,
    b64_field,
    canonical_json,
    check_int,
    header_document,
    is_json_int,
    require_canonical,
)
from fedledger.crypto.envelope import MAX_HEADER_BYTES, TAG_BYTES, check_routing_fields
from fedledger.crypto.errors import CryptoError, DecryptionFailed, MalformedEnvelope
from fedledger.crypto.keys import KeyAlgorithm, load_public_key, public_key_id
from fedledger.crypto.keywrap import unwrap_key, wrap_new_key

CHUNKED_MAGIC = b"FLE2"
CHUNKED_VERSION = 2
HKDF_INFO_V2 = b"fedledger update v2"
HASH_BYTES = 32
PREFIX_BYTES = len(CHUNKED_MAGIC) + 4
# At most this many chunks (a 2 MiB chunk table): past it, the chunks are too small to be worth a request.
MAX_CHUNKS = 1 << 16
# AES-GCM in `cryptography` takes at most 2**31 - 1 bytes per call: a chunk stays below it.
MAX_CHUNK_BYTES = 2**31 - 1 - TAG_BYTES
DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
_DECRYPTION_FAILED = (
    "decryption failed: the envelope was sealed to a different key, or its header or a chunk was altered; "
    "the client must seal the update again"
)


class ChunkTampered(DecryptionFailed):
    """A sealed chunk does not hash to its entry of the signed chunk table (altered, swapped or truncated)."""


class InvalidRange(CryptoError):
    """A coordinate range outside the update (or empty): what the caller asked is wrong, not the envelope."""


def coordinate_order(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """The tensors in the order a chunked update lays out their coordinates: by name. Fixed by the format, so
    that it never depends on how a model's tensors happen to be listed (a database, a framework, a file)."""
    return {name: tuple(int(d) for d in shapes[name]) for name in sorted(shapes)}


def layout_hash(shapes: Mapping[str, Sequence[int]]) -> str:
    """SHA-256 (hex) of the tensors' names and shapes in :func:`coordinate_order`: what a chunked envelope's
    coordinates are. The server compares it with its model's, so an update of other tensors is refused."""
    document = [[name, list(shape)] for name, shape in coordinate_order(shapes).items()]
    return hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class ChunkedHeader:
    """The cleartext header of a chunked envelope. Constructing one validates every field."""

    version: int
    algorithm: KeyAlgorithm
    key_id: str
    round_id: int
    model_version: int
    participant: str
    num_samples: int
    wrapped_key: bytes
    dtype: str
    size: int
    chunk_coords: int
    layout: str

    def __post_init__(self) -> None:
        if not is_json_int(self.version) or self.version != CHUNKED_VERSION:
            raise MalformedEnvelope(
                f"chunked envelope version {self.version!r} is not supported; this server reads {CHUNKED_VERSION}"
            )
        check_routing_fields(self)
        check_int("size", self.size, minimum=1)
        check_int("chunk_coords", self.chunk_coords, minimum=1)
        if self.dtype not in DTYPES:
            raise MalformedEnvelope(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.layout, str) or len(self.layout) != 64 or not _is_hex(self.layout):
            raise MalformedEnvelope(
                "layout must be the 64-hex-digit SHA-256 of the tensors' names and shapes"
            )
        if self.num_chunks > MAX_CHUNKS:
            raise MalformedEnvelope(
                f"{self.num_chunks} chunks of {self.chunk_coords} coordinates; at most {MAX_CHUNKS}: use larger chunks"
            )
        if self.chunk_coords * self.itemsize > MAX_CHUNK_BYTES:
            raise MalformedEnvelope(
                f"a chunk of {self.chunk_coords} coordinates exceeds {MAX_CHUNK_BYTES} bytes"
            )

    @property
    def itemsize(self) -> int:
        """Bytes per coordinate (4 for F32, 2 for F16)."""
        return DTYPES[self.dtype].itemsize

    @property
    def num_chunks(self) -> int:
        """How many chunks the ``size`` coordinates make."""
        return -(-self.size // self.chunk_coords)

    def coords_of(self, k: int) -> tuple[int, int]:
        """The coordinates ``[start, stop)`` of chunk ``k``."""
        start = k * self.chunk_coords
        return start, min(start + self.chunk_coords, self.size)

    def to_bytes(self) -> bytes:
        """The canonical header bytes: on the wire, in the signed head, and in every chunk's associated data."""
        return canonical_json(self)


_HEADER_FIELDS = frozenset(f.name for f in fields(ChunkedHeader))
_INT_FIELDS = frozenset({"version", "round_id", "model_version", "num_samples", "size", "chunk_coords"})


@dataclass(frozen=True)
class ChunkedHead:
    """What precedes the sealed chunks: the header, its exact bytes and the chunk table."""

    header: ChunkedHeader
    header_bytes: bytes
    chunk_hashes: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Bytes of the head (prefix, header, chunk table): where chunk 0 starts."""
        return PREFIX_BYTES + len(self.header_bytes) + HASH_BYTES * len(self.chunk_hashes)

    @property
    def payload_hash(self) -> bytes:
        """SHA-256 of the head: what the organization's EIP-712 ``Update.payloadHash`` signs."""
        return hashlib.sha256(self.raw()).digest()

    def raw(self) -> bytes:
        """The head's bytes as they are on the wire."""
        return (
            CHUNKED_MAGIC
            + len(self.header_bytes).to_bytes(4, "big")
            + self.header_bytes
            + b"".join(self.chunk_hashes)
        )

    def envelope_size(self) -> int:
        """Bytes of the whole envelope the header describes."""
        return self.chunk_span(self.header.num_chunks - 1)[0] + self._sealed_bytes(self.header.num_chunks - 1)

    def chunk_span(self, k: int) -> tuple[int, int]:
        """(offset in the envelope, length) of sealed chunk ``k``."""
        full = self.header.chunk_coords * self.header.itemsize + TAG_BYTES
        return self.size + k * full, self._sealed_bytes(k)

    def chunks_of(self, start: int, stop: int) -> range:
        """The chunks holding coordinates ``[start, stop)``; :class:`InvalidRange` for a range outside the update."""
        size = self.header.size
        if not (is_json_int(start) and is_json_int(stop) and 0 <= start < stop <= size):
            raise InvalidRange(
                f"coordinates [{start}, {stop}) are not a non-empty range inside this update's [0, {size})"
            )
        return range(start // self.header.chunk_coords, (stop - 1) // self.header.chunk_coords + 1)

    def _sealed_bytes(self, k: int) -> int:
        first, last = self.header.coords_of(k)
        return (last - first) * self.header.itemsize + TAG_BYTES


def is_chunked(envelope_start: bytes) -> bool:
    """Whether bytes that start an envelope start a chunked (version 2) one."""
    return envelope_start[: len(CHUNKED_MAGIC)] == CHUNKED_MAGIC


def seal_chunked(
    vector: np.ndarray,
    public_pem: bytes,
    *,
    round_id: int,
    model_version: int,
    participant: str,
    num_samples: int,
    layout: str,
    chunk_coords: int,
    half: bool = False,
) -> bytes:
    """Seal a flattened update (1-D, finite) in chunks of ``chunk_coords`` coordinates for the holder of
    ``public_pem``. Raises :class:`MalformedEnvelope` for values the server would refuse."""
    values = np.asarray(vector)
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.floating):
        raise MalformedEnvelope("a chunked update is a non-empty 1-D floating-point vector")
    if not np.isfinite(values).all():
        raise MalformedEnvelope("the update contains NaN or Inf")
    if not isinstance(participant, str) or not is_valid_address(participant):
        raise MalformedEnvelope(
            f"participant must be a 0x address (EIP-55 if mixed case), got {participant!r}"
        )
    dtype = "F16" if half else "F32"
    algorithm, public = load_public_key(public_pem)
    aes_key, wrapped_key = wrap_new_key(public, HKDF_INFO_V2)
    header = ChunkedHeader(
        version=CHUNKED_VERSION,
        algorithm=algorithm,
        key_id=public_key_id(public),
        round_id=round_id,
        model_version=model_version,
        participant=to_checksum_address(participant),
        num_samples=num_samples,
        wrapped_key=wrapped_key,
        dtype=dtype,
        size=int(values.size),
        chunk_coords=chunk_coords,
        layout=layout,
    )
    header_bytes = header.to_bytes()
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise MalformedEnvelope(f"header is {len(header_bytes)} bytes; at most {MAX_HEADER_BYTES}")
    data = np.ascontiguousarray(values, dtype=DTYPES[dtype])
    aead = AESGCM(aes_key)
    sealed = []
    for k in range(header.num_chunks):
        first, last = header.coords_of(k)
        sealed.append(aead.encrypt(_nonce(k), data[first:last].tobytes(), _aad(header_bytes, k)))
    table = b"".join(hashlib.sha256(chunk).digest() for chunk in sealed)
    return CHUNKED_MAGIC + len(header_bytes).to_bytes(4, "big") + header_bytes + table + b"".join(sealed)


# A reader of byte ranges of one envelope: (offset, length) -> the bytes there (fewer at the end).
RangeReader = Callable[[int, int], bytes]


def read_head(read: RangeReader) -> ChunkedHead:
    """The head of a chunked envelope, read with two ranged reads (prefix and header, then the table)."""
    first = read(0, PREFIX_BYTES + MAX_HEADER_BYTES)
    header, header_bytes = parse_header(first)
    table_at = PREFIX_BYTES + len(header_bytes)
    length = HASH_BYTES * header.num_chunks
    table = first[table_at : table_at + length]
    if len(table) < length:
        table += read(table_at + len(table), length - len(table))
    if len(table) != length:
        raise MalformedEnvelope(
            f"the chunk table runs past the end of the envelope ({len(table)} of {length} bytes)"
        )
    hashes = tuple(table[i : i + HASH_BYTES] for i in range(0, length, HASH_BYTES))
    return ChunkedHead(header, header_bytes, hashes)


def parse_head(envelope: bytes) -> ChunkedHead:
    """The head of a whole chunked envelope in memory, with its length checked against the header."""
    head = read_head(lambda offset, size: envelope[offset : offset + size])
    if len(envelope) != head.envelope_size():
        raise MalformedEnvelope(
            f"the envelope is {len(envelope)} bytes; its header describes {head.envelope_size()}"
        )
    return head


def parse_header(data: bytes) -> tuple[ChunkedHeader, bytes]:
    """The header and its exact bytes from the start of a chunked envelope (the rest may be absent)."""
    if not isinstance(data, bytes) or len(data) < PREFIX_BYTES:
        raise MalformedEnvelope(f"a chunked envelope starts with a {PREFIX_BYTES}-byte prefix")
    if not is_chunked(data):
        raise MalformedEnvelope(f"envelope does not start with {CHUNKED_MAGIC!r}; it is not a chunked update")
    header_len = int.from_bytes(data[len(CHUNKED_MAGIC) : PREFIX_BYTES], "big")
    if not 0 < header_len <= MAX_HEADER_BYTES:
        raise MalformedEnvelope(f"header length {header_len} is outside 1..{MAX_HEADER_BYTES} bytes")
    raw = data[PREFIX_BYTES : PREFIX_BYTES + header_len]
    if len(raw) != header_len:
        raise MalformedEnvelope(f"header length {header_len} runs past the end of the envelope")
    return _decode_header(raw), raw


class ChunkOpener:
    """Decrypts chunks of one envelope: the AES key is unwrapped once (an RSA decryption) for all of them."""

    def __init__(self, head: ChunkedHead, private_keys: Mapping[str, bytes]) -> None:
        self.head = head
        self._aead = AESGCM(unwrap_key(head.header, private_keys, HKDF_INFO_V2, _DECRYPTION_FAILED))

    def open_range(self, read: RangeReader, start: int, stop: int) -> np.ndarray:
        """Coordinates ``[start, stop)`` as float32, reading only the chunks that hold them. Raises
        :class:`InvalidRange`, :class:`ChunkTampered` (a chunk that is not the signed one) or
        :class:`DecryptionFailed`."""
        chunks = self.head.chunks_of(start, stop)
        first_offset = self.head.chunk_span(chunks.start)[0]
        last_offset, last_length = self.head.chunk_span(chunks.stop - 1)
        data = read(first_offset, last_offset + last_length - first_offset)
        parts = []
        for k in chunks:
            offset, length = self.head.chunk_span(k)
            sealed = data[offset - first_offset : offset - first_offset + length]
            parts.append(self._open(k, sealed))
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
        lo = start - chunks.start * self.head.header.chunk_coords
        return values[lo : lo + (stop - start)].astype(np.float32, copy=False)

    def check(self, read: RangeReader) -> None:
        """Authenticate and decrypt every chunk, one at a time: the checks of :meth:`open_range` over the whole
        update without ever holding its whole plaintext (what the API does at submission)."""
        for k in range(self.head.header.num_chunks):
            self._open(k, read(*self.head.chunk_span(k)))

    def _open(self, k: int, sealed: bytes) -> np.ndarray:
        if (
            len(sealed) != self.head.chunk_span(k)[1]
            or hashlib.sha256(sealed).digest() != self.head.chunk_hashes[k]
        ):
            raise ChunkTampered(
                f"chunk {k} does not match the signed chunk table (altered, swapped or truncated); "
                "the organization must seal the update again"
            )
        try:
            plaintext = self._aead.decrypt(_nonce(k), sealed, _aad(self.head.header_bytes, k))
        except InvalidTag:
            raise DecryptionFailed(_DECRYPTION_FAILED) from None
        values = np.frombuffer(plaintext, dtype=DTYPES[self.head.header.dtype])
        if not np.isfinite(values).all():
            raise MalformedEnvelope(f"chunk {k} holds NaN or Inf")
        return values


def open_chunked(envelope: bytes, private_keys: Mapping[str, bytes]) -> tuple[ChunkedHead, np.ndarray]:
    """Check and decrypt a whole chunked envelope: its head and the update as one float32 vector."""
    head = parse_head(envelope)
    opener = ChunkOpener(head, private_keys)
    vector = opener.open_range(lambda offset, size: envelope[offset : offset + size], 0, head.header.size)
    return head, vector


def signed_payload_hash(envelope: bytes) -> bytes:
    """What an organization's EIP-712 ``Update.payloadHash`` signs for this envelope: the SHA-256 of the head
    of a chunked envelope, of the whole envelope for version 1."""
    if is_chunked(envelope):
        return parse_head(envelope).payload_hash
    return hashlib.sha256(envelope).digest()


def _nonce(k: int) -> bytes:
    return k.to_bytes(12, "big")


def _aad(header_bytes: bytes, k: int) -> bytes:
    return header_bytes + k.to_bytes(8, "big")


def _decode_header(raw: bytes) -> ChunkedHeader:
    document = header_document(raw, _HEADER_FIELDS, CHUNKED_VERSION)
    values: dict[str, Any] = {}
    for name, value in document.items():
        if name == "wrapped_key":
            values[name] = b64_field(name, value)
        elif name in _INT_FIELDS:
            if not is_json_int(value) or not 0 <= value <= MAX_HEADER_INT:
                raise MalformedEnvelope(f"header field {name} must be a JSON integer, got {value!r}")
            values[name] = value
        elif not isinstance(value, str):
            raise MalformedEnvelope(f"header field {name} must be a string, got {value!r}")
        else:
            values[name] = value
    header = ChunkedHeader(**values)
    require_canonical(header, raw)
    return header


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
