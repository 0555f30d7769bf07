"""The protocol's messages as JSON documents (bytes as 0x hex) and the masked vector as raw bytes.

What the API stores and relays, and what :func:`message_bytes` counts for the benchmark. Parsing is
strict: a missing or extra field, a malformed hex string or address raises :class:`InvalidMessage` with
the field's name; signatures are checked later, against the round's group (:mod:`.protocol`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from fedledger.crypto.addresses import is_valid_address
from fedledger.secagg.errors import InvalidMessage
from fedledger.secagg.protocol import KeyAdvert, MaskedInput, ShareBox, ShareBundle, UnmaskReveal
from fedledger.secagg.shamir import Share

Json = dict[str, Any]


def advert_json(advert: KeyAdvert) -> Json:
    """Step 1 as JSON."""
    return {
        "member": advert.member,
        "channel_key": _hex(advert.channel_key),
        "mask_key": _hex(advert.mask_key),
        "signature": advert.signature,
    }


def advert_from(doc: Mapping[str, Any]) -> KeyAdvert:
    """Step 1 from JSON."""
    d = _fields(doc, {"member", "channel_key", "mask_key", "signature"}, "keys")
    return KeyAdvert(
        _address(d, "member"), _bytes(d, "channel_key", 32), _bytes(d, "mask_key", 32), _text(d, "signature")
    )


def bundle_json(bundle: ShareBundle) -> Json:
    """Step 2 as JSON."""
    return {
        "dealer": bundle.dealer,
        "boxes": [
            {
                "holder": b.holder,
                "sealed": _hex(b.sealed),
                "seed_commitment": _hex(b.seed_commitment),
                "key_commitment": _hex(b.key_commitment),
            }
            for b in bundle.boxes
        ],
        "self_seed_commitment": _hex(bundle.self_seed_commitment),
        "signature": bundle.signature,
    }


def bundle_from(doc: Mapping[str, Any]) -> ShareBundle:
    """Step 2 from JSON."""
    d = _fields(doc, {"dealer", "boxes", "self_seed_commitment", "signature"}, "shares")
    boxes = d["boxes"]
    if not isinstance(boxes, list) or len(boxes) > 255:
        raise InvalidMessage("shares.boxes must be a list of at most 255 boxes")
    parsed = []
    for raw in boxes:
        b = _fields(raw, {"holder", "sealed", "seed_commitment", "key_commitment"}, "shares.boxes[]")
        parsed.append(
            ShareBox(
                _address(b, "holder"),
                _bytes(b, "sealed", None),
                _bytes(b, "seed_commitment", 32),
                _bytes(b, "key_commitment", 32),
            )
        )
    return ShareBundle(
        _address(d, "dealer"), tuple(parsed), _bytes(d, "self_seed_commitment", 32), _text(d, "signature")
    )


def masked_json(masked: MaskedInput) -> Json:
    """Step 3's signed header as JSON (the vector travels apart, as :func:`vector_bytes`)."""
    return {
        "member": masked.member,
        "payload_hash": _hex(masked.payload_hash),
        "num_samples": masked.num_samples,
        "peers": sorted(masked.peers, key=str.lower),
        "signature": masked.signature,
    }


def masked_from(doc: Mapping[str, Any], vector: np.ndarray | None = None) -> MaskedInput:
    """Step 3 from its JSON header and, on the server, its vector."""
    d = _fields(doc, {"member", "payload_hash", "num_samples", "peers", "signature"}, "masked")
    samples = d["num_samples"]
    if not isinstance(samples, int) or isinstance(samples, bool):
        raise InvalidMessage("masked.num_samples must be an integer")
    peers = d["peers"]
    if not isinstance(peers, list) or not all(isinstance(p, str) and _valid_address(p) for p in peers):
        raise InvalidMessage("masked.peers must be a list of 0x addresses")
    return MaskedInput(
        _address(d, "member"),
        _bytes(d, "payload_hash", 32),
        samples,
        frozenset(peers),
        _text(d, "signature"),
        vector,
    )


def vector_bytes(vector: np.ndarray) -> memoryview:
    """A masked vector as little-endian uint32 words (a view of the array's buffer, not a copy)."""
    return np.ascontiguousarray(vector, dtype="<u4").data.cast("B")


def vector_from(raw: bytes | memoryview, dimension: int) -> np.ndarray:
    """A masked vector of ``dimension`` words from its bytes."""
    if len(raw) != 4 * dimension:
        raise InvalidMessage(f"a masked vector of {dimension} words is {4 * dimension} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32, copy=False)


def reveal_json(reveal: UnmaskReveal) -> Json:
    """Step 4 as JSON."""
    return {
        "member": reveal.member,
        "survivors": sorted(reveal.survivors, key=str.lower),
        "seed_shares": {o: [s.index, _hex(s.value)] for o, s in reveal.seed_shares.items()},
        "key_shares": {o: [s.index, _hex(s.value)] for o, s in reveal.key_shares.items()},
        "signature": reveal.signature,
    }


def reveal_from(doc: Mapping[str, Any]) -> UnmaskReveal:
    """Step 4 from JSON."""
    d = _fields(doc, {"member", "survivors", "seed_shares", "key_shares", "signature"}, "unmask")
    survivors = d["survivors"]
    if not isinstance(survivors, list) or not all(
        isinstance(p, str) and _valid_address(p) for p in survivors
    ):
        raise InvalidMessage("unmask.survivors must be a list of 0x addresses")
    return UnmaskReveal(
        _address(d, "member"),
        frozenset(survivors),
        _shares(d, "seed_shares"),
        _shares(d, "key_shares"),
        _text(d, "signature"),
    )


def message_bytes(doc: Json) -> int:
    """Size of a JSON message as sent (compact separators)."""
    return len(json.dumps(doc, separators=(",", ":")).encode())


def _shares(d: Mapping[str, Any], name: str) -> dict[str, Share]:
    raw = d[name]
    if not isinstance(raw, dict):
        raise InvalidMessage(f"unmask.{name} must map member addresses to [index, 0x share]")
    out = {}
    for owner, pair in raw.items():
        if (
            not isinstance(owner, str)
            or not _valid_address(owner)
            or not isinstance(pair, list)
            or len(pair) != 2
        ):
            raise InvalidMessage(f"unmask.{name} must map member addresses to [index, 0x share]")
        index, value = pair
        if not isinstance(index, int) or isinstance(index, bool):
            raise InvalidMessage(f"unmask.{name}[{owner}] index must be an integer")
        out[owner] = Share(index, _bytes({"share": value}, "share", 32))
    return out


def _fields(doc: object, names: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping) or set(doc) != names:
        raise InvalidMessage(f"a {what} message has exactly the fields {sorted(names)}")
    return doc


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def _text(d: Mapping[str, Any], name: str) -> str:
    value = d[name]
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} must be a string")
    return value


@lru_cache(maxsize=4096)
def _valid_address(value: str) -> bool:
    # EIP-55 checking hashes the address; a round's messages name the same few addresses many times.
    return is_valid_address(value)


def _address(d: Mapping[str, Any], name: str) -> str:
    value = d[name]
    if not isinstance(value, str) or not _valid_address(value):
        raise InvalidMessage(f"{name} must be a 0x address, got {value!r}")
    return str(value)


def _bytes(d: Mapping[str, Any], name: str, length: int | None) -> bytes:
    value = d[name]
    if not isinstance(value, str) or not value.startswith("0x"):
        raise InvalidMessage(f"{name} must be 0x hex")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise InvalidMessage(f"{name} is not valid hex") from None
    if length is not None and len(raw) != length:
        raise InvalidMessage(f"{name} must be {length} bytes, got {len(raw)}")
    return raw
