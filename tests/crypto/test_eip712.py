"""EIP-712 signatures over updates and models, cross-checked against a by-hand encoding of the spec."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from fedledger.crypto.eip712 import (
    SECP256K1_N,
    model_typed_data,
    normalize_signature,
    payload_hash,
    recover_model_signer,
    recover_update_signer,
    sign_model,
    sign_update,
    signature_digest,
    update_digest,
    update_typed_data,
)
from fedledger.crypto.errors import SignatureError
from fedledger.devkeys import MODEL_SIGNER_INDEX, dev_private_key

from .conftest import ORG_ADDRESS, ORG_KEY

LEDGER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
UPDATE = {
    "chain_id": 31337,
    "verifying_contract": LEDGER,
    "round_id": 12,
    "model_version": 11,
    "payload_hash": hashlib.sha256(b"an envelope").digest(),
    "num_samples": 640,
}
MODEL = {
    "chain_id": 31337,
    "verifying_contract": LEDGER,
    "version": 7,
    "model_hash": hashlib.sha256(b"weights").digest(),
}


def test_payload_hash_is_sha256_of_the_whole_envelope() -> None:
    assert payload_hash(b"FLE1 whole envelope") == hashlib.sha256(b"FLE1 whole envelope").digest()
    assert len(payload_hash(b"")) == 32


def test_update_signature_recovers_the_signer() -> None:
    signature = sign_update(ORG_KEY, **UPDATE)
    assert signature.startswith("0x") and len(signature) == 2 + 130
    assert recover_update_signer(signature, **UPDATE) == ORG_ADDRESS


def test_signing_is_deterministic_rfc6979() -> None:
    assert sign_update(ORG_KEY, **UPDATE) == sign_update(ORG_KEY, **UPDATE)


@pytest.mark.parametrize(
    "field, value",
    [
        ("round_id", 13),
        ("model_version", 10),
        ("num_samples", 641),
        ("payload_hash", hashlib.sha256(b"another envelope").digest()),
        ("chain_id", 1),
        ("verifying_contract", "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
    ],
)
def test_signature_over_other_values_recovers_another_address(field: str, value: object) -> None:
    signature = sign_update(ORG_KEY, **UPDATE)
    recovered = recover_update_signer(signature, **{**UPDATE, field: value})
    assert recovered != ORG_ADDRESS


def test_contract_address_case_does_not_matter() -> None:
    signature = sign_update(ORG_KEY, **UPDATE)
    assert recover_update_signer(signature, **{**UPDATE, "verifying_contract": LEDGER.lower()}) == ORG_ADDRESS


def test_payload_hash_may_be_given_as_hex() -> None:
    signature = sign_update(ORG_KEY, **UPDATE)
    as_hex = {**UPDATE, "payload_hash": "0x" + UPDATE["payload_hash"].hex()}
    assert recover_update_signer(signature, **as_hex) == ORG_ADDRESS


def test_model_signature_recovers_the_model_signer() -> None:
    key = dev_private_key(MODEL_SIGNER_INDEX)
    signature = sign_model(key, **MODEL)
    assert recover_model_signer(signature, **MODEL) == Account.from_key(key).address
    assert recover_model_signer(signature, **{**MODEL, "version": 8}) != Account.from_key(key).address


def test_update_and_model_signatures_do_not_cross() -> None:
    """Same domain, different primary types: an Update signature is not a Model signature."""
    typed_update = update_typed_data(**UPDATE)
    typed_model = model_typed_data(
        chain_id=UPDATE["chain_id"],
        verifying_contract=LEDGER,
        version=UPDATE["round_id"],
        model_hash=UPDATE["payload_hash"],
    )
    assert signature_digest(typed_update) != signature_digest(typed_model)


def test_typed_data_is_json_for_wallets() -> None:
    typed = update_typed_data(**UPDATE)
    assert json.loads(json.dumps(typed)) == typed
    assert typed["primaryType"] == "Update"
    assert typed["domain"] == {
        "name": "fedledger",
        "version": "1",
        "chainId": 31337,
        "verifyingContract": LEDGER,
    }
    assert [f["name"] for f in typed["types"]["Update"]] == [
        "roundId",
        "modelVersion",
        "payloadHash",
        "numSamples",
    ]
    assert typed["message"]["payloadHash"] == "0x" + UPDATE["payload_hash"].hex()


# --- independent computation of the digest (EIP-712 spec, by hand) ----------------------------------


def _domain_separator(chain_id: int, contract: str) -> bytes:
    type_hash = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [type_hash, keccak(b"fedledger"), keccak(b"1"), chain_id, contract],
        )
    )


def _update_struct_hash(round_id: int, model_version: int, payload: bytes, num_samples: int) -> bytes:
    type_hash = keccak(b"Update(uint256 roundId,uint256 modelVersion,bytes32 payloadHash,uint256 numSamples)")
    return keccak(
        encode(
            ["bytes32", "uint256", "uint256", "bytes32", "uint256"],
            [type_hash, round_id, model_version, payload, num_samples],
        )
    )


def _model_struct_hash(version: int, model: bytes) -> bytes:
    type_hash = keccak(b"Model(uint256 version,bytes32 modelHash)")
    return keccak(encode(["bytes32", "uint256", "bytes32"], [type_hash, version, model]))


def test_update_encoding_matches_the_spec_by_hand() -> None:
    signable = encode_typed_data(full_message=update_typed_data(**UPDATE))
    separator = _domain_separator(UPDATE["chain_id"], LEDGER)
    struct = _update_struct_hash(
        UPDATE["round_id"], UPDATE["model_version"], UPDATE["payload_hash"], UPDATE["num_samples"]
    )
    assert bytes(signable.version) == b"\x01"
    assert bytes(signable.header) == separator
    assert bytes(signable.body) == struct
    digest = keccak(b"\x19\x01" + separator + struct)
    assert signature_digest(update_typed_data(**UPDATE)) == digest


def test_update_signature_is_a_plain_secp256k1_signature_of_the_digest() -> None:
    digest = keccak(
        b"\x19\x01"
        + _domain_separator(UPDATE["chain_id"], LEDGER)
        + _update_struct_hash(
            UPDATE["round_id"], UPDATE["model_version"], UPDATE["payload_hash"], UPDATE["num_samples"]
        )
    )
    direct = keys.PrivateKey(bytes.fromhex(ORG_KEY[2:])).sign_msg_hash(digest)
    expected = (
        "0x" + (direct.r.to_bytes(32, "big") + direct.s.to_bytes(32, "big") + bytes([direct.v + 27])).hex()
    )
    assert sign_update(ORG_KEY, **UPDATE) == expected


def test_model_encoding_matches_the_spec_by_hand() -> None:
    signable = encode_typed_data(full_message=model_typed_data(**MODEL))
    assert bytes(signable.header) == _domain_separator(MODEL["chain_id"], LEDGER)
    assert bytes(signable.body) == _model_struct_hash(MODEL["version"], MODEL["model_hash"])


# --- malformed signatures and inputs -----------------------------------------------------------------


def _high_s_twin(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - raw[64]])).hex()


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda s: "0x1234", "65 bytes"),
        (lambda s: s + "00", "65 bytes"),
        (lambda s: "0x" + "zz" * 65, "not hex"),
        (lambda s: s[:-2] + "1d", "v must be 27 or 28"),
        (lambda s: s[:-2] + "00", "v must be 27 or 28"),
        (lambda s: "0x" + "00" * 32 + s[66:], "outside"),
        (lambda s: "0x" + "ff" * 32 + s[66:], "outside"),
        (lambda s: _high_s_twin(s), "high s"),
        (lambda s: "0x" + (5).to_bytes(32, "big").hex() + (5).to_bytes(32, "big").hex() + "1b", "no signer"),
        (lambda s: 12345, "must be a 0x-hex string"),
    ],
)
def test_malformed_signatures_raise(mangle, reason: str) -> None:
    signature = sign_update(ORG_KEY, **UPDATE)
    with pytest.raises(SignatureError, match=reason):
        recover_update_signer(mangle(signature), **UPDATE)


def test_high_s_twin_would_otherwise_recover_the_same_signer() -> None:
    """Why high-s is refused: it is a second valid encoding of the same signature."""
    signature = sign_update(ORG_KEY, **UPDATE)
    signable = encode_typed_data(full_message=update_typed_data(**UPDATE))
    assert (
        Account.recover_message(signable, signature=bytes.fromhex(_high_s_twin(signature)[2:])) == ORG_ADDRESS
    )


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"payload_hash": b"\x00" * 31}, "32 bytes"),
        ({"payload_hash": "ab" * 32}, "must be 32 bytes"),
        ({"payload_hash": "0x" + "zz" * 32}, "not valid hex"),
        ({"round_id": -1}, "round_id"),
        ({"num_samples": 2**256}, "num_samples"),
        ({"model_version": True}, "model_version"),
        ({"chain_id": 0}, "chain_id"),
        ({"verifying_contract": "0x1234"}, "verifying_contract"),
        ({"verifying_contract": LEDGER.swapcase().replace("0X", "0x")}, "verifying_contract"),
    ],
)
def test_invalid_typed_data_values_raise(changes: dict, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        update_typed_data(**{**UPDATE, **changes})
    with pytest.raises(SignatureError, match=reason):
        sign_update(ORG_KEY, **{**UPDATE, **changes})


def test_bad_private_key_raises_without_echoing_it() -> None:
    bad = "0x" + "11" * 31
    with pytest.raises(SignatureError, match="private key") as info:
        sign_update(bad, **UPDATE)
    assert "11" * 31 not in str(info.value)


def test_normalize_signature() -> None:
    signature = sign_update(ORG_KEY, **UPDATE)
    assert normalize_signature(signature.upper().replace("0X", "0x")) == signature
    assert normalize_signature(signature[2:]) == signature
    assert normalize_signature(bytes.fromhex(signature[2:])) == signature


def test_update_digest_is_the_generic_encoders() -> None:
    """The server's hand-encoded Update digest equals eth_account's for any field values."""
    rng = random.Random(7)
    for _ in range(50):
        fields = {
            "chain_id": rng.choice([1, 31337, rng.randrange(1, 2**64)]),
            "verifying_contract": to_checksum_address(rng.randbytes(20)),
            "round_id": rng.choice([0, 1, rng.randrange(2**256)]),
            "model_version": rng.randrange(2**64),
            "payload_hash": rng.randbytes(32),
            "num_samples": rng.choice([1, rng.randrange(2**256)]),
        }
        assert update_digest(**fields) == signature_digest(update_typed_data(**fields))
        assert update_digest(**{**fields, "verifying_contract": fields["verifying_contract"].lower()}) == (
            signature_digest(update_typed_data(**fields))
        )


def test_update_digest_checks_the_chain_id_before_its_cache() -> None:
    update_digest(**{**UPDATE, "chain_id": 1})
    with pytest.raises(SignatureError, match="chain_id"):
        update_digest(**{**UPDATE, "chain_id": True})
