"""Chunked envelopes: round trips, reading one coordinate range alone, and every tampering a typed error."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedledger.crypto.chunked import (
    CHUNKED_MAGIC,
    PREFIX_BYTES,
    ChunkOpener,
    ChunkTampered,
    InvalidRange,
    coordinate_order,
    layout_hash,
    open_chunked,
    parse_head,
    read_head,
    seal_chunked,
    signed_payload_hash,
)
from fedledger.crypto.eip712 import recover_update_signer, sign_update
from fedledger.crypto.envelope import TAG_BYTES, seal
from fedledger.crypto.errors import DecryptionFailed, MalformedEnvelope, UnknownKey
from fedledger.crypto.keys import ServerKeyPair

from .conftest import ORG_ADDRESS, ORG_KEY

HEADER = {"round_id": 5, "model_version": 4, "participant": ORG_ADDRESS, "num_samples": 1200}
LAYOUT = layout_hash({"w": (10, 100), "b": (3,)})
SIZE = 1003
CHUNK = 100


@pytest.fixture(scope="module")
def vector() -> np.ndarray:
    return np.random.default_rng(3).normal(size=SIZE).astype(np.float32)


def sealed(vector: np.ndarray, key: ServerKeyPair, **changes: object) -> bytes:
    arguments: dict = {**HEADER, "layout": LAYOUT, "chunk_coords": CHUNK} | changes
    return seal_chunked(vector, key.public_pem, **arguments)


def keymap(key: ServerKeyPair) -> dict[str, bytes]:
    return {key.key_id: key.private_pem}


class CountingReader:
    """Byte ranges of an envelope, counting what was read (a worker must read only its chunks)."""

    def __init__(self, envelope: bytes) -> None:
        self.envelope, self.bytes_read = envelope, 0

    def __call__(self, offset: int, size: int) -> bytes:
        data = self.envelope[offset : offset + size]
        self.bytes_read += len(data)
        return data


def test_round_trip(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = sealed(vector, server_key)
    head, opened = open_chunked(envelope, keymap(server_key))
    assert np.array_equal(opened, vector)
    assert (head.header.size, head.header.num_chunks, head.header.participant) == (SIZE, 11, ORG_ADDRESS)
    assert envelope[:4] == CHUNKED_MAGIC
    assert len(envelope) == head.envelope_size()


def test_half_precision_round_trips_exactly_what_float16_holds(
    server_key: ServerKeyPair, vector: np.ndarray
) -> None:
    _, opened = open_chunked(sealed(vector, server_key, half=True), keymap(server_key))
    assert opened.dtype == np.float32
    assert np.array_equal(opened, vector.astype(np.float16).astype(np.float32))


def test_a_range_is_read_and_decrypted_alone(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = sealed(vector, server_key)
    reader = CountingReader(envelope)
    head = read_head(reader)
    head_read = reader.bytes_read
    values = ChunkOpener(head, keymap(server_key)).open_range(reader, 250, 420)
    assert np.array_equal(values, vector[250:420])
    # Chunks 2, 3 and 4 only (coordinates 200-499), not the other eight.
    assert reader.bytes_read - head_read == 3 * (CHUNK * 4 + TAG_BYTES)
    assert np.array_equal(ChunkOpener(head, keymap(server_key)).open_range(reader, 1000, 1003), vector[1000:])


def test_the_signature_covers_the_head_and_so_every_chunk(
    server_key: ServerKeyPair, vector: np.ndarray
) -> None:
    """A worker that read only the head checks the wallet's signature over it; the head's table then vouches
    for each chunk it reads."""
    envelope = sealed(vector, server_key)
    head = read_head(CountingReader(envelope))
    assert (
        signed_payload_hash(envelope) == head.payload_hash == hashlib.sha256(envelope[: head.size]).digest()
    )
    domain = {"chain_id": 31337, "verifying_contract": "0x" + "11" * 20, "round_id": 5, "model_version": 4}
    signature = sign_update(ORG_KEY, payload_hash=head.payload_hash, num_samples=1200, **domain)
    assert (
        recover_update_signer(signature, payload_hash=head.payload_hash, num_samples=1200, **domain)
        == ORG_ADDRESS
    )
    # A version 1 envelope signs the hash of all its bytes, as before.
    v1 = seal(b"payload", server_key.public_pem, **HEADER)
    assert signed_payload_hash(v1) == hashlib.sha256(v1).digest()


def test_a_tampered_chunk_is_refused(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = bytearray(sealed(vector, server_key))
    head = parse_head(bytes(envelope))
    offset, _ = head.chunk_span(3)
    envelope[offset + 5] ^= 0x01
    opener = ChunkOpener(head, keymap(server_key))
    reader = CountingReader(bytes(envelope))
    with pytest.raises(ChunkTampered, match="chunk 3"):
        opener.open_range(reader, 0, SIZE)
    # The untouched chunks still open: a worker whose range avoids chunk 3 is not affected.
    assert np.array_equal(opener.open_range(reader, 0, 300), vector[:300])


def test_reordered_chunks_are_refused(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = sealed(vector, server_key)
    head = parse_head(envelope)
    (a, n), (b, _) = head.chunk_span(1), head.chunk_span(2)
    swapped = envelope[:a] + envelope[b : b + n] + envelope[a : a + n] + envelope[b + n :]
    with pytest.raises(ChunkTampered):
        open_chunked(swapped, keymap(server_key))
    # Swapping the table's entries too makes the chunks match the table, but then the head is not the one the
    # wallet signed, and each chunk's associated data (its index) still refuses it.
    table = head.size - 32 * head.header.num_chunks
    t1, t2 = table + 32, table + 64
    both = swapped[:t1] + swapped[t2 : t2 + 32] + swapped[t1:t2] + swapped[t2 + 32 :]
    assert signed_payload_hash(both) != head.payload_hash
    with pytest.raises(DecryptionFailed):
        open_chunked(both, keymap(server_key))


def test_a_chunk_from_another_envelope_is_refused(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    first, second = sealed(vector, server_key), sealed(vector, server_key)
    head = parse_head(first)
    offset, length = head.chunk_span(0)
    spliced = first[:offset] + second[offset : offset + length] + first[offset + length :]
    with pytest.raises(ChunkTampered):
        open_chunked(spliced, keymap(server_key))


def test_wrong_ranges_are_invalid_range(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = sealed(vector, server_key)
    head = parse_head(envelope)
    opener = ChunkOpener(head, keymap(server_key))
    for start, stop in ((0, 0), (5, 3), (-1, 10), (0, SIZE + 1), (SIZE, SIZE + 5)):
        with pytest.raises(InvalidRange, match="range"):
            opener.open_range(CountingReader(envelope), start, stop)


def test_a_truncated_envelope_or_header_is_malformed(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = sealed(vector, server_key)
    with pytest.raises(MalformedEnvelope, match="bytes; its header describes"):
        parse_head(envelope[:-1])
    with pytest.raises(MalformedEnvelope):
        parse_head(envelope[: PREFIX_BYTES + 10])
    with pytest.raises(MalformedEnvelope, match="FLE2"):
        parse_head(b"FLE1" + envelope[4:])


def test_the_key_must_be_the_servers(server_key: ServerKeyPair, vector: np.ndarray) -> None:
    envelope = sealed(vector, server_key)
    with pytest.raises(UnknownKey):
        open_chunked(envelope, {})


def test_sealing_refuses_what_the_server_would(server_key: ServerKeyPair) -> None:
    with pytest.raises(MalformedEnvelope, match="NaN"):
        sealed(np.array([1.0, np.nan], dtype=np.float32), server_key)
    with pytest.raises(MalformedEnvelope, match="1-D"):
        sealed(np.zeros((2, 2), dtype=np.float32), server_key)
    with pytest.raises(MalformedEnvelope, match="at most"):
        sealed(np.zeros(70_000, dtype=np.float32), server_key, chunk_coords=1)


def test_the_layout_is_the_tensors_by_name_whatever_order_they_are_listed_in() -> None:
    assert list(coordinate_order({"b": (3,), "a": [2, 1]})) == ["a", "b"]
    assert coordinate_order({"b": (3,), "a": [2, 1]})["a"] == (2, 1)
    assert layout_hash({"a": (2,), "b": (3,)}) == layout_hash({"b": (3,), "a": (2,)})
    assert layout_hash({"a": (2, 3)}) != layout_hash({"a": (3, 2)})
    assert layout_hash({"a": (2,)}) != layout_hash({"c": (2,)})
