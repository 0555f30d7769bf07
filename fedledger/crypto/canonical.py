"""Canonical JSON headers, shared by both envelope formats: one encoding per header (keys sorted, no
whitespace, ASCII, integers as JSON integers, bytes as standard padded base64), and the strict decoding
that refuses anything else with :class:`MalformedEnvelope`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import fields
from typing import Any, TypeGuard

from fedledger.crypto.errors import MalformedEnvelope
from fedledger.crypto.keys import KeyAlgorithm
from fedledger.crypto.strictjson import loads_strict

# Integers must fit the database's signed 64-bit columns (they also fit EIP-712's uint256).
MAX_HEADER_INT = 2**63 - 1


def canonical_json(header: Any) -> bytes:
    """The canonical bytes of a header dataclass's fields (bytes as padded base64, the algorithm by its
    name)."""
    document: dict[str, Any] = {}
    for f in fields(header):
        value = getattr(header, f.name)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, KeyAlgorithm):
            value = value.value
        document[f.name] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def header_document(raw: bytes, names: frozenset[str], version: int) -> dict[str, object]:
    """The JSON object of a header's bytes, with exactly the fields ``names`` of format ``version``
    (strict JSON: no floats, no duplicate keys)."""
    try:
        document = loads_strict(raw.decode("ascii"), allow_floats=False)
    except UnicodeDecodeError:
        raise MalformedEnvelope("header is not ASCII JSON") from None
    except ValueError as exc:  # JSONDecodeError and the hooks' refusals
        raise MalformedEnvelope(f"header is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedEnvelope("header must be a JSON object")
    missing = sorted(names - document.keys())
    unexpected = sorted(document.keys() - names)
    if missing or unexpected:
        raise MalformedEnvelope(
            f"header fields do not match version {version}: missing {missing}, unexpected {unexpected}"
        )
    return document


def require_canonical(header: Any, raw: bytes) -> None:
    """Refuse a header that parsed but is not byte for byte its canonical encoding."""
    if canonical_json(header) != raw:
        raise MalformedEnvelope("header is not canonical JSON (sorted keys, no whitespace, padded base64)")


def b64_field(name: str, value: object) -> bytes:
    """A header field holding standard padded base64."""
    if not isinstance(value, str):
        raise MalformedEnvelope(f"header field {name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEnvelope(f"header field {name} is not valid padded base64") from None


def is_json_int(value: object) -> TypeGuard[int]:
    """An integer that is not a bool (JSON's true/false decode to Python's bools, which are ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, *, minimum: int) -> None:
    """``value`` is an integer in ``minimum``..:data:`MAX_HEADER_INT`."""
    if not is_json_int(value) or not minimum <= value <= MAX_HEADER_INT:
        raise MalformedEnvelope(f"{name} must be an integer in {minimum}..{MAX_HEADER_INT}, got {value!r}")
