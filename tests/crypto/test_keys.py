"""Server keys: generation per algorithm, key ids from the public key alone, refusal of other keys."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fedledger.crypto.errors import CryptoError, InvalidKey
from fedledger.crypto.keys import (
    KeyAlgorithm,
    ServerKeyPair,
    generate_server_key,
    key_id_of,
    load_private_key,
    load_public_key,
)


def test_generated_key_matches_its_algorithm_and_id(server_key: ServerKeyPair) -> None:
    algorithm, public = load_public_key(server_key.public_pem)
    assert algorithm is server_key.algorithm
    private_algorithm, private = load_private_key(server_key.private_pem)
    assert private_algorithm is server_key.algorithm
    assert re.fullmatch(r"[0-9a-f]{32}", server_key.key_id)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert server_key.key_id == hashlib.sha256(der).hexdigest()[:32]
    assert key_id_of(server_key.public_pem) == server_key.key_id
    assert server_key.private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert server_key.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_rsa_keys_are_3072_bits(server_keys: dict[KeyAlgorithm, ServerKeyPair]) -> None:
    _, public = load_public_key(server_keys[KeyAlgorithm.rsa_oaep_sha256].public_pem)
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 3072


def test_default_algorithm_is_x25519() -> None:
    assert generate_server_key().algorithm is KeyAlgorithm.x25519


def test_fresh_keys_have_distinct_ids() -> None:
    assert generate_server_key().key_id != generate_server_key().key_id


def test_key_id_does_not_depend_on_pem_layout(server_key: ServerKeyPair) -> None:
    reflowed = b"\n\n" + server_key.public_pem.replace(b"\n", b"\r\n")
    assert key_id_of(reflowed) == server_key.key_id


def test_repr_never_shows_the_private_key(server_key: ServerKeyPair) -> None:
    assert b"PRIVATE" not in repr(server_key).encode()
    assert server_key.key_id in repr(server_key)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b"x" * 100_000],
)
def test_garbage_public_keys_are_refused(garbage: bytes) -> None:
    with pytest.raises(InvalidKey):
        load_public_key(garbage)
    with pytest.raises(CryptoError):
        key_id_of(garbage)


def test_other_key_types_are_refused() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidKey, match="not an RSA or X25519"):
        load_public_key(ec_pem)


def test_small_rsa_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = small.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidKey, match="3072 or 4096"):
        load_public_key(pem)
    private_pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidKey, match="3072 or 4096"):
        load_private_key(private_pem)


def test_a_public_key_is_not_a_private_key(server_key: ServerKeyPair) -> None:
    with pytest.raises(InvalidKey):
        load_private_key(server_key.public_pem)
