"""Properties over random inputs: seal/open round trips, and no input makes parsing or opening fail
with anything but a typed CryptoError."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.canonical import MAX_HEADER_INT
from fedledger.crypto.envelope import open_envelope, parse_header, seal
from fedledger.crypto.errors import DecryptionFailed, MalformedEnvelope, UnknownKey
from fedledger.crypto.keys import KeyAlgorithm, ServerKeyPair

from .conftest import ORG_ADDRESS

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: to_checksum_address("0x" + raw.hex()))
header_values = st.fixed_dictionaries(
    {
        "round_id": st.integers(1, MAX_HEADER_INT),
        "model_version": st.integers(0, MAX_HEADER_INT),
        "participant": addresses,
        "num_samples": st.integers(1, MAX_HEADER_INT),
    }
)


@PROPERTY_SETTINGS
@given(
    algorithm=st.sampled_from(list(KeyAlgorithm)),
    plaintext=st.binary(max_size=4096),
    values=header_values,
)
def test_seal_open_round_trip(
    server_keys: dict[KeyAlgorithm, ServerKeyPair], algorithm: KeyAlgorithm, plaintext: bytes, values: dict
) -> None:
    key = server_keys[algorithm]
    envelope = seal(plaintext, key.public_pem, **values)
    header, opened = open_envelope(envelope, {key.key_id: key.private_pem})
    assert opened == plaintext
    assert header.algorithm is algorithm
    assert header.key_id == key.key_id
    assert {name: getattr(header, name) for name in values} == values
    assert parse_header(envelope) == header


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=512))
def test_random_bytes_are_malformed_never_a_crash(data: bytes) -> None:
    for candidate in (data, b"FLE1" + data, b"FLE1" + len(data).to_bytes(4, "big") + data):
        with pytest.raises(MalformedEnvelope):
            parse_header(candidate)


@PROPERTY_SETTINGS
@given(
    algorithm=st.sampled_from(list(KeyAlgorithm)),
    position=st.integers(min_value=0),
    xor=st.integers(1, 255),
    cut=st.booleans(),
)
def test_any_single_byte_change_is_refused(
    server_keys: dict[KeyAlgorithm, ServerKeyPair],
    algorithm: KeyAlgorithm,
    position: int,
    xor: int,
    cut: bool,
) -> None:
    key = server_keys[algorithm]
    envelope = seal(
        b"model delta", key.public_pem, round_id=3, model_version=2, participant=ORG_ADDRESS, num_samples=9
    )
    position %= len(envelope)
    tampered = (
        envelope[:position]
        if cut
        else envelope[:position] + bytes([envelope[position] ^ xor]) + envelope[position + 1 :]
    )
    with pytest.raises((MalformedEnvelope, DecryptionFailed, UnknownKey)):
        open_envelope(tampered, {key.key_id: key.private_pem})


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20), flips=st.sets(st.integers(0, 39), min_size=1, max_size=5))
def test_a_case_typo_in_a_checksummed_address_is_refused(raw: bytes, flips: set[int]) -> None:
    address = to_checksum_address("0x" + raw.hex())
    digits = list(address[2:])
    for index in flips:
        digits[index] = digits[index].swapcase()
    typo = "0x" + "".join(digits)
    assert is_valid_address(address)
    assert is_valid_address(address.lower())
    if typo != address and typo[2:] not in (typo[2:].lower(), typo[2:].upper()):
        assert not is_valid_address(typo)
