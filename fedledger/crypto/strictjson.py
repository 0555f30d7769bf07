"""Strict JSON parsing for untrusted headers and manifests.

Python's ``json`` accepts duplicate keys (last one wins), ``NaN`` and ``Infinity``. Two parsers that
disagree on a duplicate key can be shown different documents by one byte string, so every document
fedledger.crypto reads from the wire goes through :func:`loads_strict`, which refuses all three.
"""

from __future__ import annotations

import json
from typing import Any


def loads_strict(text: str, *, allow_floats: bool = True) -> Any:
    """Parse JSON, raising :class:`ValueError` on duplicate keys, NaN/Infinity, or (optionally) floats."""
    return json.loads(
        text,
        object_pairs_hook=_no_duplicate_keys,
        parse_constant=_refuse_constant,
        parse_float=float if allow_floats else _refuse_float,
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"non-standard constant {text}")


def _refuse_float(text: str) -> Any:
    raise ValueError(f"non-integer number {text}")
