"""EIP-712 typed-data signatures: an organization's wallet over an update, the server's over a model.

Domain (both types): ``EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)``
with ``name = "fedledger"``, ``version = "1"``, the chain id and the ledger contract's address, so a
signature is valid on one deployment of one chain only.

- ``Update(uint256 roundId,uint256 modelVersion,bytes32 payloadHash,uint256 numSamples)``:
  ``payloadHash`` is SHA-256 of the whole sealed envelope, so the server checks the signature before it
  decrypts anything, and the blob store addresses the ciphertext by the same hash.
- ``Model(uint256 version,bytes32 modelHash)``: ``modelHash`` is SHA-256 of the safetensors weights bytes.

:func:`update_typed_data` and :func:`model_typed_data` return plain JSON-serializable dicts (``bytes32``
values as ``0x`` hex strings), the shape wallets take for ``eth_signTypedData_v4``, so a browser or
hardware wallet can produce the same signature as :func:`sign_update`.

Recovery accepts one encoding per signature: 65 bytes ``r || s || v`` with ``v`` in {27, 28} and
``s`` in the lower half of the curve order (EIP-2). Every signer in common use (eth_account, ethers,
MetaMask) produces that form; refusing the others means a signature cannot be re-encoded into a second
valid byte string for the same message.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_keys import keys
from eth_keys.exceptions import BadSignature
from eth_keys.exceptions import ValidationError as EthKeysValidationError
from eth_utils import keccak, to_checksum_address

from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.errors import SignatureError

DOMAIN_NAME = "fedledger"
DOMAIN_VERSION = "1"
HASH_BYTES = 32
SIGNATURE_BYTES = 65
UINT256_MAX = 2**256 - 1
# Order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

EIP712_DOMAIN_FIELDS = (
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
)
UPDATE_FIELDS = (
    {"name": "roundId", "type": "uint256"},
    {"name": "modelVersion", "type": "uint256"},
    {"name": "payloadHash", "type": "bytes32"},
    {"name": "numSamples", "type": "uint256"},
)
MODEL_FIELDS = (
    {"name": "version", "type": "uint256"},
    {"name": "modelHash", "type": "bytes32"},
)


def payload_hash(envelope: bytes) -> bytes:
    """SHA-256 of the whole sealed envelope (32 bytes): what ``Update.payloadHash`` signs."""
    return hashlib.sha256(envelope).digest()


def model_hash(weights: bytes) -> bytes:
    """SHA-256 of the safetensors weights bytes (32 bytes): what ``Model.modelHash`` signs."""
    return hashlib.sha256(weights).digest()


def update_typed_data(
    *,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    model_version: int,
    payload_hash: bytes,
    num_samples: int,
) -> dict[str, Any]:
    """The EIP-712 document a participant's wallet signs for one update."""
    return _typed_data(
        "Update",
        UPDATE_FIELDS,
        chain_id=chain_id,
        verifying_contract=verifying_contract,
        message={
            "roundId": _uint256("round_id", round_id),
            "modelVersion": _uint256("model_version", model_version),
            "payloadHash": _hash_hex("payload_hash", payload_hash),
            "numSamples": _uint256("num_samples", num_samples),
        },
    )


def model_typed_data(
    *, chain_id: int, verifying_contract: str, version: int, model_hash: bytes
) -> dict[str, Any]:
    """The EIP-712 document the server's model signer signs for one model version."""
    return _typed_data(
        "Model",
        MODEL_FIELDS,
        chain_id=chain_id,
        verifying_contract=verifying_contract,
        message={"version": _uint256("version", version), "modelHash": _hash_hex("model_hash", model_hash)},
    )


def sign_update(
    private_key: str,
    *,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    model_version: int,
    payload_hash: bytes,
    num_samples: int,
) -> str:
    """Sign an update with a wallet key; returns the 0x-hex 65-byte signature."""
    return sign_typed_data(
        private_key,
        update_typed_data(
            chain_id=chain_id,
            verifying_contract=verifying_contract,
            round_id=round_id,
            model_version=model_version,
            payload_hash=payload_hash,
            num_samples=num_samples,
        ),
    )


def recover_update_signer(
    signature: str,
    *,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    model_version: int,
    payload_hash: bytes,
    num_samples: int,
) -> str:
    """The checksummed address that signed this update. A signature over any other field values
    recovers a different (unrelated) address: compare the result with the expected signer.

    The server checks one of these per submission: the digest is computed by :func:`update_digest` (the
    same bytes as eth_account's generic encoder, a test compares them, at a tenth of its cost) and the key
    is recovered from it directly."""
    raw = _signature_bytes(signature)
    digest = update_digest(
        chain_id=chain_id,
        verifying_contract=verifying_contract,
        round_id=round_id,
        model_version=model_version,
        payload_hash=payload_hash,
        num_samples=num_samples,
    )
    return _recover_digest_signer(raw, digest)


UPDATE_TYPE = "Update(uint256 roundId,uint256 modelVersion,bytes32 payloadHash,uint256 numSamples)"
_UPDATE_TYPEHASH = keccak(UPDATE_TYPE.encode())
_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


def update_digest(
    *,
    chain_id: int,
    verifying_contract: str,
    round_id: int,
    model_version: int,
    payload_hash: bytes,
    num_samples: int,
) -> bytes:
    """``signature_digest(update_typed_data(...))``, encoded by hand from the fixed ``Update`` type: the
    same checks of every field, the domain separator computed once per (chain, contract)."""
    struct_hash = keccak(
        _UPDATE_TYPEHASH
        + _uint256("round_id", round_id).to_bytes(32, "big")
        + _uint256("model_version", model_version).to_bytes(32, "big")
        + bytes.fromhex(_hash_hex("payload_hash", payload_hash)[2:])
        + _uint256("num_samples", num_samples).to_bytes(32, "big")
    )
    # Checked before the cache: True would otherwise find the entry of chain 1.
    chain_id = _uint256("chain_id", chain_id, minimum=1)
    return keccak(b"\x19\x01" + _domain_separator(chain_id, verifying_contract) + struct_hash)


@lru_cache(maxsize=64)
def _domain_separator(chain_id: int, verifying_contract: str) -> bytes:
    if not isinstance(verifying_contract, str) or not is_valid_address(verifying_contract):
        raise SignatureError(
            f"verifying_contract must be the ledger's 0x address (EIP-55 if mixed case), got {verifying_contract!r}"
        )
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + _uint256("chain_id", chain_id, minimum=1).to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(verifying_contract[2:])
    )


def _recover_digest_signer(raw: bytes, digest: bytes) -> str:
    """The checksummed address whose key signed ``digest`` (``raw`` already checked by _signature_bytes)."""
    try:
        signature = keys.Signature(signature_bytes=raw[:64] + bytes([raw[64] - 27]))
        return signature.recover_public_key_from_msg_hash(digest).to_checksum_address()
    except (BadSignature, EthKeysValidationError, ValueError) as exc:
        raise SignatureError(f"no signer can be recovered from this signature: {exc}") from exc


def sign_model(
    private_key: str, *, chain_id: int, verifying_contract: str, version: int, model_hash: bytes
) -> str:
    """Sign a model version's weights hash with the server's model-signer key."""
    return sign_typed_data(
        private_key,
        model_typed_data(
            chain_id=chain_id, verifying_contract=verifying_contract, version=version, model_hash=model_hash
        ),
    )


def recover_model_signer(
    signature: str, *, chain_id: int, verifying_contract: str, version: int, model_hash: bytes
) -> str:
    """The checksummed address that signed this model version and hash."""
    return recover_typed_data_signer(
        signature,
        model_typed_data(
            chain_id=chain_id, verifying_contract=verifying_contract, version=version, model_hash=model_hash
        ),
    )


def sign_typed_data(private_key: str, typed_data: dict[str, Any]) -> str:
    """Sign any EIP-712 document; returns 0x-hex ``r || s || v`` with v in {27, 28}."""
    signable = _signable(typed_data)
    try:
        signed = Account.sign_message(signable, private_key)
    except (ValueError, TypeError) as exc:
        # Never echo the key: it may be a real secret with a typo.
        raise SignatureError(
            "private key is not a valid 32-byte secp256k1 key in 0x-hex; check the wallet key setting"
        ) from exc
    return "0x" + bytes(signed.signature).hex()


def recover_typed_data_signer(signature: str | bytes, typed_data: dict[str, Any]) -> str:
    """The checksummed address whose key produced ``signature`` over ``typed_data``."""
    raw = _signature_bytes(signature)
    signable = _signable(typed_data)
    try:
        return to_checksum_address(Account.recover_message(signable, signature=raw))
    except (BadSignature, EthKeysValidationError, ValueError) as exc:
        raise SignatureError(f"no signer can be recovered from this signature: {exc}") from exc


def normalize_signature(signature: str | bytes) -> str:
    """The canonical text form of a signature (lowercase 0x-hex); :class:`SignatureError` if malformed."""
    return "0x" + _signature_bytes(signature).hex()


def signature_digest(typed_data: dict[str, Any]) -> bytes:
    """The 32-byte digest ``keccak256(0x19 0x01 || domainSeparator || hashStruct(message))`` that is signed."""
    signable = _signable(typed_data)
    return keccak(b"\x19" + bytes(signable.version) + bytes(signable.header) + bytes(signable.body))


def _typed_data(
    primary_type: str,
    type_fields: tuple[dict[str, str], ...],
    *,
    chain_id: int,
    verifying_contract: str,
    message: dict[str, Any],
) -> dict[str, Any]:
    if not isinstance(verifying_contract, str) or not is_valid_address(verifying_contract):
        raise SignatureError(
            f"verifying_contract must be the ledger's 0x address (EIP-55 if mixed case), got {verifying_contract!r}"
        )
    return {
        "types": {
            "EIP712Domain": [dict(f) for f in EIP712_DOMAIN_FIELDS],
            primary_type: [dict(f) for f in type_fields],
        },
        "primaryType": primary_type,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": _uint256("chain_id", chain_id, minimum=1),
            "verifyingContract": to_checksum_address(verifying_contract),
        },
        "message": message,
    }


def _signable(typed_data: dict[str, Any]) -> SignableMessage:
    try:
        return encode_typed_data(full_message=typed_data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # What eth_account raises on documents that do not match their types.
        raise SignatureError(f"typed data cannot be EIP-712 encoded: {exc}") from exc


def _uint256(name: str, value: object, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= UINT256_MAX:
        raise SignatureError(f"{name} must be an integer in {minimum}..2**256-1, got {value!r}")
    return value


def _hash_hex(name: str, value: object) -> str:
    """A bytes32 field as 0x hex. Accepts 32 raw bytes or a 0x-prefixed 64-digit hex string."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str) and value.startswith("0x"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise SignatureError(f"{name} is not valid hex") from None
    else:
        raise SignatureError(f"{name} must be 32 bytes (a SHA-256 digest), got {type(value).__name__}")
    if len(raw) != HASH_BYTES:
        raise SignatureError(f"{name} must be {HASH_BYTES} bytes (a SHA-256 digest), got {len(raw)}")
    return "0x" + raw.hex()


def _signature_bytes(signature: str | bytes) -> bytes:
    if isinstance(signature, bytes | bytearray):
        raw = bytes(signature)
    elif isinstance(signature, str):
        text = signature[2:] if signature[:2] in ("0x", "0X") else signature
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise SignatureError("signature is not hex; send the wallet's 0x-hex 65-byte signature") from None
    else:
        raise SignatureError(f"signature must be a 0x-hex string, got {type(signature).__name__}")
    if len(raw) != SIGNATURE_BYTES:
        raise SignatureError(f"signature must be {SIGNATURE_BYTES} bytes (r || s || v), got {len(raw)}")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    if v not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {v}; re-encode a 0/1 recovery id as 27/28")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SignatureError("signature r or s is outside the secp256k1 group order")
    if s > SECP256K1_N // 2:
        raise SignatureError(
            "signature has a high s value (not EIP-2 canonical); normalise s to n - s and flip v"
        )
    return raw
