"""The EIP-712 documents a member's wallet signs at each step, so the server relays but cannot forge.

Same domain as every fedledger signature (:mod:`fedledger.crypto.eip712`: name "fedledger", version "1",
chain id, the ledger's address). Every type names the round and the group (``groupId``, a hash of the
round, the assignment seed, the threshold and the members), so a message cannot be replayed into another
round or shown to another group:

- ``SecAggJoin(uint256 roundId,uint256 modelVersion)``: a member's commitment to the round, before the
  groups are drawn (the join phase of the live stack, :mod:`fedledger.domain.secagg`);
- ``SecAggKeys(uint256 roundId,bytes32 groupId,bytes32 channelKey,bytes32 maskKey)``: the two X25519
  public keys;
- ``SecAggShares(uint256 roundId,bytes32 groupId,bytes32 sharesHash)``: the share boxes and the commitments
  to every share and to the self-mask seed;
- ``SecAggMasked(uint256 roundId,bytes32 groupId,bytes32 payloadHash,uint256 numSamples,bytes32 peersHash)``:
  the masked vector's SHA-256, the sample claim, and the members whose masks it carries;
- ``SecAggUnmask(uint256 roundId,bytes32 groupId,bytes32 survivorsHash,bytes32 revealHash)``: the survivors
  the member was shown and the shares it reveals for them (self-mask seeds) and for the others (mask keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_utils import keccak, to_checksum_address

from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.eip712 import DOMAIN_NAME, DOMAIN_VERSION, EIP712_DOMAIN_FIELDS, normalize_signature
from fedledger.crypto.errors import SignatureError
from fedledger.secagg.errors import InvalidMessage

_ROUND_GROUP = ({"name": "roundId", "type": "uint256"}, {"name": "groupId", "type": "bytes32"})
TYPES: dict[str, tuple[dict[str, str], ...]] = {
    "SecAggKeys": (
        *_ROUND_GROUP,
        {"name": "channelKey", "type": "bytes32"},
        {"name": "maskKey", "type": "bytes32"},
    ),
    # Before any group exists: a member's commitment to take part in the round on its model version.
    "SecAggJoin": ({"name": "roundId", "type": "uint256"}, {"name": "modelVersion", "type": "uint256"}),
    "SecAggShares": (*_ROUND_GROUP, {"name": "sharesHash", "type": "bytes32"}),
    "SecAggMasked": (
        *_ROUND_GROUP,
        {"name": "payloadHash", "type": "bytes32"},
        {"name": "numSamples", "type": "uint256"},
        {"name": "peersHash", "type": "bytes32"},
    ),
    "SecAggUnmask": (
        *_ROUND_GROUP,
        {"name": "survivorsHash", "type": "bytes32"},
        {"name": "revealHash", "type": "bytes32"},
    ),
}


@dataclass(frozen=True)
class Domain:
    """Where signatures are valid: one chain and one ledger contract."""

    chain_id: int
    verifying_contract: str

    def __post_init__(self) -> None:
        if not is_valid_address(self.verifying_contract):
            raise InvalidMessage(f"verifying contract {self.verifying_contract!r} is not a 0x address")
        if self.chain_id < 1:
            raise InvalidMessage(f"chain id must be >= 1, got {self.chain_id}")


def typed_data(domain: Domain, primary_type: str, message: dict[str, Any]) -> dict[str, Any]:
    """The EIP-712 document of one step (``bytes`` values become 0x hex, as wallets take them)."""
    fields = TYPES[primary_type]
    if set(message) != {f["name"] for f in fields}:
        raise InvalidMessage(f"{primary_type} needs exactly the fields {[f['name'] for f in fields]}")
    return {
        "types": {
            "EIP712Domain": [dict(f) for f in EIP712_DOMAIN_FIELDS],
            primary_type: [dict(f) for f in fields],
        },
        "primaryType": primary_type,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": domain.chain_id,
            "verifyingContract": to_checksum_address(domain.verifying_contract),
        },
        "message": {k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in message.items()},
    }


def digest(domain: Domain, primary_type: str, message: dict[str, Any]) -> bytes:
    """The 32-byte EIP-712 digest of one step's message, encoded by hand from its fixed type (every field is
    a ``uint256`` or a ``bytes32``): the same bytes as eth_account's generic encoder of :func:`typed_data`
    (a test compares them) at a small fraction of its cost, which matters at ``3k`` checks per member."""
    fields = TYPES[primary_type]
    if set(message) != {f["name"] for f in fields}:
        raise InvalidMessage(f"{primary_type} needs exactly the fields {[f['name'] for f in fields]}")
    encoded = [_TYPE_HASHES[primary_type]]
    for f in fields:
        value = message[f["name"]]
        if f["type"] == "bytes32":
            if not isinstance(value, bytes) or len(value) != 32:
                raise InvalidMessage(f"{primary_type}.{f['name']} must be 32 bytes")
            encoded.append(value)
        else:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**256:
                raise InvalidMessage(f"{primary_type}.{f['name']} must be an integer in 0..2**256-1")
            encoded.append(value.to_bytes(32, "big"))
    return keccak(b"\x19\x01" + _domain_separator(domain) + keccak(b"".join(encoded)))


def sign(wallet_key: str, domain: Domain, primary_type: str, message: dict[str, Any]) -> str:
    """A wallet's 0x-hex ``r || s || v`` signature (v in {27, 28}; libsecp256k1 gives the low s) over one
    step's message: what ``eth_signTypedData_v4`` of :func:`typed_data` gives."""
    try:
        private = PrivateKey(bytes.fromhex(wallet_key.removeprefix("0x")))
    except ValueError as exc:
        # Never echo the key.
        raise InvalidMessage("wallet key is not a 32-byte secp256k1 key in 0x-hex") from exc
    raw = private.sign_recoverable(digest(domain, primary_type, message), hasher=None)
    return "0x" + raw[:64].hex() + f"{raw[64] + 27:02x}"


def check_signer(
    signature: str, expected: str, domain: Domain, primary_type: str, message: dict[str, Any]
) -> None:
    """:class:`InvalidMessage` unless ``signature`` over ``message`` is ``expected``'s (one encoding per
    signature: 65 bytes, v in {27, 28}, low s, as :func:`fedledger.crypto.eip712.normalize_signature`)."""
    try:
        raw = bytes.fromhex(normalize_signature(signature)[2:])
        public = PublicKey.from_signature_and_message(
            raw[:64] + bytes([raw[64] - 27]), digest(domain, primary_type, message), hasher=None
        )
        signer = _address_of(public.format(compressed=False))
    except (SignatureError, ValueError) as exc:
        raise InvalidMessage(f"{primary_type} from {expected}: no signer can be recovered ({exc})") from exc
    if signer != expected.lower():
        raise InvalidMessage(
            f"{primary_type} claims to be from {expected} but was signed by {to_checksum_address(signer)}; the "
            "message was forged or altered in transit"
        )


@lru_cache(maxsize=4096)
def _address_of(uncompressed_public: bytes) -> str:
    # A round checks each member's signatures many times: hash each public key once.
    return "0x" + keccak(uncompressed_public[1:])[-20:].hex()


_TYPE_HASHES = {
    name: keccak(f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})".encode())
    for name, fields in TYPES.items()
}
_DOMAIN_TYPE_HASH = keccak(
    f"EIP712Domain({','.join(f['type'] + ' ' + f['name'] for f in EIP712_DOMAIN_FIELDS)})".encode()
)


@lru_cache(maxsize=16)
def _domain_separator(domain: Domain) -> bytes:
    return keccak(
        _DOMAIN_TYPE_HASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + domain.chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(domain.verifying_contract[2:])
    )
