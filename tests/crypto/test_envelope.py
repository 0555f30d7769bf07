"""Sealed envelopes: round trips with real payloads, tamper detection, key lookup, strict parsing."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from eth_account import Account

from fedledger.crypto.envelope import (
    ENVELOPE_MAGIC,
    MAX_HEADER_BYTES,
    EnvelopeHeader,
    open_envelope,
    parse_header,
    seal,
    split_envelope,
)
from fedledger.crypto.errors import DecryptionFailed, InvalidKey, MalformedEnvelope, UnknownKey
from fedledger.crypto.keys import KeyAlgorithm, ServerKeyPair, generate_server_key
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key
from fedledger.payload import decode_update, model_shapes

from .conftest import ORG_ADDRESS

HEADER = {"round_id": 5, "model_version": 4, "participant": ORG_ADDRESS, "num_samples": 1200}


def keymap(*keys: ServerKeyPair) -> dict[str, bytes]:
    return {key.key_id: key.private_pem for key in keys}


def frame(header_bytes: bytes, ciphertext: bytes) -> bytes:
    return ENVELOPE_MAGIC + len(header_bytes).to_bytes(4, "big") + header_bytes + ciphertext


def header_document(envelope: bytes) -> tuple[dict, bytes]:
    _, header_bytes, ciphertext = split_envelope(envelope)
    return json.loads(header_bytes), ciphertext


def canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def with_header(envelope: bytes, **changes: object) -> bytes:
    document, ciphertext = header_document(envelope)
    document.update(changes)
    return frame(canonical(document), ciphertext)


# --- round trips -------------------------------------------------------------------------------------


def test_round_trip_with_a_real_update(server_key: ServerKeyPair, update_payload: bytes, delta: dict) -> None:
    envelope = seal(update_payload, server_key.public_pem, **HEADER)
    header, plaintext = open_envelope(envelope, keymap(server_key))
    assert plaintext == update_payload
    decoded = decode_update(plaintext, model_shapes(delta))
    assert set(decoded) == set(delta)
    assert header.version == 1
    assert header.algorithm is server_key.algorithm
    assert header.key_id == server_key.key_id
    assert (header.round_id, header.model_version, header.participant, header.num_samples) == tuple(
        HEADER.values()
    )
    assert parse_header(envelope) == header


def test_empty_plaintext_round_trips(server_key: ServerKeyPair) -> None:
    envelope = seal(b"", server_key.public_pem, **HEADER)
    assert open_envelope(envelope, keymap(server_key))[1] == b""


def test_sealing_twice_gives_unrelated_envelopes(server_key: ServerKeyPair) -> None:
    first = parse_header(seal(b"same", server_key.public_pem, **HEADER))
    second = parse_header(seal(b"same", server_key.public_pem, **HEADER))
    assert first.nonce != second.nonce
    assert first.wrapped_key != second.wrapped_key


def test_wrapped_key_sizes(server_keys: dict[KeyAlgorithm, ServerKeyPair]) -> None:
    rsa_header = parse_header(seal(b"x", server_keys[KeyAlgorithm.rsa_oaep_sha256].public_pem, **HEADER))
    x_header = parse_header(seal(b"x", server_keys[KeyAlgorithm.x25519].public_pem, **HEADER))
    assert len(rsa_header.wrapped_key) == 384
    assert len(x_header.wrapped_key) == 32
    assert len(rsa_header.nonce) == len(x_header.nonce) == 12


def test_lowercase_participant_is_written_checksummed(server_key: ServerKeyPair) -> None:
    envelope = seal(b"x", server_key.public_pem, **{**HEADER, "participant": ORG_ADDRESS.lower()})
    assert parse_header(envelope).participant == ORG_ADDRESS


def test_header_is_canonical_json(server_key: ServerKeyPair) -> None:
    envelope = seal(b"x", server_key.public_pem, **HEADER)
    _, header_bytes, _ = split_envelope(envelope)
    document = json.loads(header_bytes)
    assert canonical(document) == header_bytes
    assert sorted(document) == [
        "algorithm", "key_id", "model_version", "nonce", "num_samples", "participant", "round_id", "version",
        "wrapped_key",
    ]  # fmt: skip
    assert document["algorithm"] == server_key.algorithm.value


# --- keys: rotation and lookup -----------------------------------------------------------------------


def test_key_rotation_both_keys_open_their_envelopes(server_keys: dict[KeyAlgorithm, ServerKeyPair]) -> None:
    old, new = server_keys[KeyAlgorithm.rsa_oaep_sha256], generate_server_key(KeyAlgorithm.x25519)
    both = keymap(old, new)
    for key in (old, new):
        header, plaintext = open_envelope(seal(key.key_id.encode(), key.public_pem, **HEADER), both)
        assert header.key_id == key.key_id
        assert plaintext == key.key_id.encode()


def test_unknown_key_id_names_the_key(server_key: ServerKeyPair) -> None:
    envelope = seal(b"x", server_key.public_pem, **HEADER)
    other = generate_server_key()
    with pytest.raises(UnknownKey, match="unknown or retired") as info:
        open_envelope(envelope, keymap(other))
    assert info.value.key_id == server_key.key_id
    assert server_key.key_id in str(info.value)


def test_a_key_map_under_wrong_ids_is_a_configuration_error(server_key: ServerKeyPair) -> None:
    envelope = seal(b"x", server_key.public_pem, **HEADER)
    other = generate_server_key()
    with pytest.raises(InvalidKey, match="key_id_of"):
        open_envelope(envelope, {server_key.key_id: other.private_pem})


def test_another_key_of_the_same_id_cannot_decrypt(server_key: ServerKeyPair) -> None:
    """An attacker who rewrites the key id to a key they don't hold gains nothing: the tag fails."""
    envelope = seal(b"x", server_key.public_pem, **HEADER)
    other = generate_server_key(server_key.algorithm)
    forged = with_header(envelope, key_id=other.key_id)
    with pytest.raises(DecryptionFailed):
        open_envelope(forged, keymap(other))


# --- tampering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_samples", 1_000_000),
        ("round_id", 6),
        ("model_version", 3),
        # Another organization, named the same in every process (pytest-xdist workers collect alike).
        ("participant", Account.from_key(dev_private_key(FIRST_ORGANIZATION_INDEX + 1)).address),
    ],
)
def test_changing_a_header_field_fails_decryption(
    server_key: ServerKeyPair, field: str, value: object
) -> None:
    envelope = seal(b"secret update", server_key.public_pem, **HEADER)
    tampered = with_header(envelope, **{field: value})
    assert getattr(parse_header(tampered), field) == value  # still well-formed...
    with pytest.raises(DecryptionFailed):  # ...but bound to the ciphertext
        open_envelope(tampered, keymap(server_key))


def test_every_header_byte_flip_is_refused(server_key: ServerKeyPair) -> None:
    envelope = seal(b"secret update", server_key.public_pem, **HEADER)
    header_end = len(envelope) - len(split_envelope(envelope)[2])
    for position in range(len(ENVELOPE_MAGIC), header_end):
        tampered = bytearray(envelope)
        tampered[position] ^= 0x01
        with pytest.raises((MalformedEnvelope, DecryptionFailed, UnknownKey)):
            open_envelope(bytes(tampered), keymap(server_key))


def test_every_ciphertext_byte_flip_fails_decryption(server_key: ServerKeyPair) -> None:
    envelope = seal(b"0123456789abcdef" * 4, server_key.public_pem, **HEADER)
    start = len(envelope) - len(split_envelope(envelope)[2])
    for position in range(start, len(envelope)):
        tampered = bytearray(envelope)
        tampered[position] ^= 0x80
        with pytest.raises(DecryptionFailed):
            open_envelope(bytes(tampered), keymap(server_key))


def test_truncated_or_extended_ciphertext_fails(server_key: ServerKeyPair) -> None:
    envelope = seal(b"payload", server_key.public_pem, **HEADER)
    for tampered in (envelope[:-1], envelope + b"\x00"):
        with pytest.raises(DecryptionFailed):
            open_envelope(tampered, keymap(server_key))


def test_swapped_wrapped_key_fails(server_key: ServerKeyPair) -> None:
    one = seal(b"one", server_key.public_pem, **HEADER)
    two = seal(b"two", server_key.public_pem, **HEADER)
    forged = with_header(one, wrapped_key=header_document(two)[0]["wrapped_key"])
    with pytest.raises(DecryptionFailed):
        open_envelope(forged, keymap(server_key))


def test_low_order_ephemeral_key_fails(server_keys: dict[KeyAlgorithm, ServerKeyPair]) -> None:
    key = server_keys[KeyAlgorithm.x25519]
    envelope = seal(b"x", key.public_pem, **HEADER)
    forged = with_header(envelope, wrapped_key=base64.b64encode(bytes(32)).decode())
    with pytest.raises(DecryptionFailed):
        open_envelope(forged, keymap(key))


def test_decryption_failures_share_one_message(server_keys: dict[KeyAlgorithm, ServerKeyPair]) -> None:
    """No padding oracle: a bad RSA unwrap and a bad tag are indistinguishable to the sender."""
    key = server_keys[KeyAlgorithm.rsa_oaep_sha256]
    envelope = seal(b"x", key.public_pem, **HEADER)
    bad_unwrap = with_header(envelope, wrapped_key=base64.b64encode(b"\x01" * 384).decode())
    bad_tag = envelope[:-1] + bytes([envelope[-1] ^ 1])
    messages = set()
    for tampered in (bad_unwrap, bad_tag):
        with pytest.raises(DecryptionFailed) as info:
            open_envelope(tampered, keymap(key))
        messages.add(str(info.value))
    assert len(messages) == 1


# --- malformed input ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_envelope(server_keys: dict[KeyAlgorithm, ServerKeyPair]) -> bytes:
    return seal(b"payload", server_keys[KeyAlgorithm.x25519].public_pem, **HEADER)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda e: b"", "shorter than"),
        (lambda e: e[:6], "shorter than"),
        (lambda e: b"FLE2" + e[4:], "does not start with"),
        (lambda e: b"PK\x03\x04" + e[4:], "does not start with"),
        (lambda e: e[:4] + (0xFFFFFFFF).to_bytes(4, "big") + e[8:], "outside"),
        (lambda e: e[:4] + (MAX_HEADER_BYTES + 1).to_bytes(4, "big") + e[8:], "outside"),
        (lambda e: e[:4] + (0).to_bytes(4, "big") + e[8:], "outside"),
        (lambda e: e[:4] + (len(e)).to_bytes(4, "big") + e[8:], "runs past"),
        (lambda e: e[: len(e) - len(split_envelope(e)[2])] + b"\x00" * 15, "shorter than the 16-byte tag"),
    ],
)
def test_bad_framing_is_malformed(valid_envelope: bytes, make, reason: str) -> None:
    with pytest.raises(MalformedEnvelope, match=reason):
        parse_header(make(valid_envelope))


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"nonce": "not base64!"}, "base64"),
        ({"nonce": "AAAA"}, "nonce must be 12 bytes"),
        ({"wrapped_key": base64.b64encode(bytes(31)).decode()}, "wrapped_key for X25519 must be 32"),
        ({"algorithm": "RSA-OAEP-256"}, "wrapped_key for RSA-OAEP-256"),
        ({"algorithm": "ROT13"}, "unknown algorithm"),
        ({"participant": ORG_ADDRESS.lower()}, "checksummed"),
        ({"participant": ORG_ADDRESS[:-1] + ("a" if ORG_ADDRESS[-1] != "a" else "b")}, "checksummed"),
        ({"participant": ORG_ADDRESS.swapcase().replace("0X", "0x")}, "checksummed"),
        ({"participant": "0x1234"}, "checksummed"),
        ({"round_id": 0}, "round_id"),
        ({"round_id": -3}, "round_id"),
        ({"round_id": 2**63}, "round_id"),
        ({"num_samples": 0}, "num_samples"),
        ({"model_version": -1}, "model_version"),
        ({"num_samples": True}, "JSON integer"),
        ({"num_samples": "10"}, "JSON integer"),
        ({"version": 2}, "version 2 is not supported"),
        ({"key_id": "ABC"}, "key_id"),
        ({"key_id": 12}, "must be a string"),
        ({"extra": 1}, "unexpected \\['extra'\\]"),
    ],
)
def test_bad_header_fields_are_malformed(valid_envelope: bytes, changes: dict, reason: str) -> None:
    with pytest.raises(MalformedEnvelope, match=reason):
        parse_header(with_header(valid_envelope, **changes))


def test_missing_field_is_malformed(valid_envelope: bytes) -> None:
    document, ciphertext = header_document(valid_envelope)
    del document["num_samples"]
    with pytest.raises(MalformedEnvelope, match="missing \\['num_samples'\\]"):
        parse_header(frame(canonical(document), ciphertext))


@pytest.mark.parametrize(
    "rewrite, reason",
    [
        (lambda h: h.replace(b'"round_id":5', b'"round_id":5.0'), "not valid JSON"),
        (lambda h: h.replace(b'"round_id":5', b'"round_id":NaN'), "not valid JSON"),
        (lambda h: h.replace(b",", b", ", 1), "not canonical"),
        (lambda h: h.replace(b'"round_id":5', b'"round_id":05'), "not valid JSON"),
        (lambda h: h[:-1] + b',"round_id":6}', "duplicate key"),
        (lambda h: b"[" + h + b"]", "must be a JSON object"),
        (lambda h: h.replace(b'"X25519"', '"X25519\u00e9"'.encode()), "not ASCII"),
        (lambda h: h.replace(b'"version":1', b'"version":1 '), "not canonical"),
        (lambda h: h.replace(b'"algorithm":"X25519",', b""), "missing"),
    ],
)
def test_non_canonical_or_invalid_json_is_malformed(valid_envelope: bytes, rewrite, reason: str) -> None:
    _, header_bytes, ciphertext = split_envelope(valid_envelope)
    rewritten = rewrite(header_bytes)
    assert rewritten != header_bytes
    with pytest.raises(MalformedEnvelope, match=reason):
        parse_header(frame(rewritten, ciphertext))


def test_non_canonical_base64_is_malformed(valid_envelope: bytes) -> None:
    """Base64 with non-zero padding bits decodes to the same bytes; only the canonical form is accepted."""
    document, ciphertext = header_document(valid_envelope)
    wrapped = document[
        "wrapped_key"
    ]  # 32 bytes -> 43 characters + "=": the last character carries 2 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(wrapped[42])
    document["wrapped_key"] = wrapped[:42] + alphabet[last ^ 0b01] + "="
    assert base64.b64decode(document["wrapped_key"]) == base64.b64decode(wrapped)
    with pytest.raises(MalformedEnvelope, match="not canonical"):
        parse_header(frame(canonical(document), ciphertext))


def test_whitespace_in_base64_is_malformed(valid_envelope: bytes) -> None:
    document, ciphertext = header_document(valid_envelope)
    document["nonce"] = document["nonce"][:8] + "\n" + document["nonce"][8:]
    with pytest.raises(MalformedEnvelope, match="base64"):
        parse_header(frame(canonical(document), ciphertext))


@pytest.mark.parametrize(
    "changes",
    [{"round_id": 0}, {"num_samples": 0}, {"model_version": -1}, {"participant": "0xnotanaddress"}],
)
def test_seal_refuses_invalid_header_values(server_key: ServerKeyPair, changes: dict) -> None:
    with pytest.raises(MalformedEnvelope):
        seal(b"x", server_key.public_pem, **{**HEADER, **changes})


def test_seal_refuses_a_mistyped_checksum(server_key: ServerKeyPair) -> None:
    typo = "0x" + ORG_ADDRESS[2:].swapcase()
    with pytest.raises(MalformedEnvelope, match="participant"):
        seal(b"x", server_key.public_pem, **{**HEADER, "participant": typo})


def test_seal_refuses_a_low_order_x25519_server_key() -> None:
    pem = x25519.X25519PublicKey.from_public_bytes(bytes(32)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidKey, match="low-order"):
        seal(b"x", pem, **HEADER)


def test_seal_refuses_a_garbage_public_key() -> None:
    with pytest.raises(InvalidKey):
        seal(b"x", b"garbage", **HEADER)


def test_envelope_header_validates_on_construction() -> None:
    with pytest.raises(MalformedEnvelope, match="round_id"):
        EnvelopeHeader(
            version=1,
            algorithm=KeyAlgorithm.x25519,
            key_id="0" * 32,
            round_id=0,
            model_version=0,
            participant=ORG_ADDRESS,
            num_samples=1,
            nonce=bytes(12),
            wrapped_key=bytes(32),
        )


def test_non_bytes_envelope_is_malformed() -> None:
    with pytest.raises(MalformedEnvelope, match="must be bytes"):
        parse_header("FLE1...")  # type: ignore[arg-type]
