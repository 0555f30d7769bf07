"""The one definition of every governed parameter, read from ``param_table.json`` (the Solidity side is
generated from the same file by ``blockchain/scripts/genParams.js``).

Each :class:`ParamDef` knows its index in ``ProtocolParameters.Param``, its kind, its genesis value and its
allowed range, both as the chain's uint256 and in Python units: token amounts and counts as ``int`` (token
wei, seconds), WAD reals and scores as ``float``, flags as ``bool``, enums as their value's name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

WAD = 10**18
UINT256_MAX = 2**256 - 1

ParamValue = int | float | bool | str


class Kind(StrEnum):
    """How a parameter's uint256 reads (see the table's ``about``)."""

    TOKEN = "token"  # token amount: tokens in the table, token wei on chain and in Python
    REAL = "real"  # WAD fixed point real number
    SCORE = "score"  # WAD on the 0..100 scale
    COUNT = "count"
    SECONDS = "seconds"
    BOOL = "bool"
    ENUM = "enum"
    RESERVED = "reserved"  # a retired slot: refused by the contract, read by nothing


_SCALED = (Kind.TOKEN, Kind.REAL, Kind.SCORE)
# How the dashboard and error messages name each kind's unit.
UNIT_LABELS = {
    Kind.TOKEN: "tokens",
    Kind.REAL: "real number",
    Kind.SCORE: "score 0–100",
    Kind.COUNT: "count",
    Kind.SECONDS: "seconds",
    Kind.BOOL: "on/off",
    Kind.ENUM: "choice",
    Kind.RESERVED: "reserved",
}


class ParamTableError(ValueError):
    """The parameter table is malformed (an entry out of order, a default outside its range, ...)."""


@dataclass(frozen=True)
class ParamDef:
    """One governed parameter. ``raw_*`` are the chain's uint256 values, the range inclusive."""

    index: int
    name: str
    kind: Kind
    meaning: str
    values: tuple[str, ...]  # an enum's value names, in code order
    setter: str | None  # the contract function that sets it when not setParameter
    raw_default: int
    raw_min: int
    raw_max: int
    range_text: str  # the table's interval, in human units ("[0, 0.5)")
    interval: Interval  # the same in Python units

    @property
    def reserved(self) -> bool:
        """A retired slot: the contract refuses to set it and nothing reads it."""
        return self.kind is Kind.RESERVED

    @property
    def unit(self) -> str:
        """How a person reads the value ("seconds", "tokens", ...)."""
        return UNIT_LABELS[self.kind]

    @property
    def default(self) -> ParamValue:
        """The genesis value in Python units."""
        return self.from_raw(self.raw_default)

    def from_raw(self, raw: int) -> ParamValue:
        """The chain's uint256 in Python units."""
        if self.kind is Kind.ENUM:
            return self.values[raw]
        if self.kind is Kind.BOOL:
            return bool(raw)
        if self.kind in (Kind.REAL, Kind.SCORE):
            return raw / WAD
        return int(raw)


@dataclass(frozen=True)
class Interval:
    """A parameter's range in Python units (token wei, seconds, counts, real numbers)."""

    low: float
    high: float  # inf: unbounded
    low_open: bool
    high_open: bool

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        def show(x: float) -> str:
            return "inf" if x == float("inf") else f"{x:g}" if isinstance(x, float) else str(x)

        return f"{'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}{')' if self.high_open else ']'}"


def to_raw(kind: Kind, text: str, name: str) -> int:
    """``"1.25"`` in a kind's human unit -> the uint256 the chain stores, exactly."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?", str(text).strip())
    if match is None:
        raise ParamTableError(f"{name}: {text!r} is not a non-negative decimal")
    whole, frac = match.group(1), match.group(2) or ""
    if kind not in _SCALED:
        if frac.strip("0"):
            raise ParamTableError(f"{name}: a {kind} is a whole number, got {text}")
        return int(whole)
    if len(frac) > 18:
        raise ParamTableError(f"{name}: {text} has more than 18 decimals")
    return int(whole) * WAD + int(frac.ljust(18, "0"))


_INTERVAL = re.compile(r"([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])")


def _python_unit(kind: Kind, text: str, name: str) -> float:
    raw = to_raw(kind, text, name)
    return raw / WAD if kind in (Kind.REAL, Kind.SCORE) else raw


def _raw_range(entry: dict[str, Any], kind: Kind, values: tuple[str, ...]) -> tuple[int, int, Interval]:
    name = entry["name"]
    if kind is Kind.ENUM:
        return 0, len(values) - 1, Interval(0, len(values) - 1, False, False)
    match = _INTERVAL.fullmatch(str(entry.get("range", "")))
    if match is None:
        raise ParamTableError(f"{name}: range {entry.get('range')!r} is not an interval like '[0, 0.5)'")
    opening, low, high, closing = match.groups()
    raw_min = to_raw(kind, low, name) + (1 if opening == "(" else 0)
    raw_max = UINT256_MAX if high == "inf" else to_raw(kind, high, name) - (1 if closing == ")" else 0)
    interval = Interval(
        _python_unit(kind, low, name),
        float("inf") if high == "inf" else _python_unit(kind, high, name),
        opening == "(",
        closing == ")",
    )
    if "bits" in entry and raw_max > 2 ** int(entry["bits"]) - 1:
        # Packed storage: the value's bit width bounds it (token wei and seconds are the raw value).
        raw_max = 2 ** int(entry["bits"]) - 1
        interval = Interval(interval.low, raw_max, interval.low_open, False)
    if raw_min > raw_max:
        raise ParamTableError(f"{name}: empty range {entry['range']}")
    return raw_min, raw_max, interval


def _parse(entry: dict[str, Any], position: int) -> ParamDef:
    name = str(entry["name"])
    if entry["index"] != position:
        raise ParamTableError(
            f"{name}: index {entry['index']} at position {position} (append only, in order)"
        )
    kind = Kind(entry["kind"])
    values = tuple(str(v) for v in entry.get("values", ()))
    if kind is Kind.RESERVED:
        return ParamDef(
            position, name, kind, entry["meaning"], (), None, 0, 0, 0, "", Interval(0, 0, False, False)
        )
    if kind is Kind.ENUM:
        if entry["default"] not in values:
            raise ParamTableError(f"{name}: default {entry['default']!r} is not one of {values}")
        raw_default = values.index(entry["default"])
    else:
        raw_default = to_raw(kind, entry["default"], name)
    raw_min, raw_max, interval = _raw_range(entry, kind, values)
    if not raw_min <= raw_default <= raw_max:
        raise ParamTableError(f"{name}: default {entry['default']} outside {entry.get('range')}")
    return ParamDef(
        index=position,
        name=name,
        kind=kind,
        meaning=str(entry["meaning"]),
        values=values,
        setter=entry.get("setter"),
        raw_default=raw_default,
        raw_min=raw_min,
        raw_max=raw_max,
        range_text=str(entry.get("range", f"[0, {len(values) - 1}]")),
        interval=interval,
    )


def parse_table(text: str) -> tuple[ParamDef, ...]:
    """Every entry of a table document, checked."""
    return tuple(_parse(entry, i) for i, entry in enumerate(json.loads(text)["parameters"]))


@cache
def table() -> tuple[ParamDef, ...]:
    """The installed table, in ``ProtocolParameters.Param`` order (reserved slots included)."""
    return parse_table(resources.files("fedledger.chain").joinpath("param_table.json").read_text("utf-8"))


def live() -> tuple[ParamDef, ...]:
    """The parameters that are in use (the reserved slots left out)."""
    return tuple(p for p in table() if not p.reserved)


def param(name: str) -> ParamDef:
    """The parameter called ``name``; :class:`KeyError` naming it otherwise."""
    for p in table():
        if p.name == name:
            return p
    raise KeyError(f"no governed parameter named {name!r}")


def genesis() -> dict[str, ParamValue]:
    """Every live parameter's genesis value in Python units, in table order."""
    return {p.name: p.default for p in live()}


def genesis_real(name: str) -> float:
    """A WAD parameter's genesis value (for dataclass defaults)."""
    value = param(name).default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is not numeric")
    return float(value)


def genesis_int(name: str) -> int:
    """A token, count or seconds parameter's genesis value."""
    value = param(name).default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is not an integer parameter")
    return value


def human(p: ParamDef, raw: int) -> str:
    """A raw value as the table writes it ("0.3", "100"; an enum's value name)."""
    if p.kind is Kind.ENUM:
        return p.values[raw] if 0 <= raw < len(p.values) else str(raw)
    if p.kind in _SCALED:
        text = f"{Decimal(raw) / Decimal(WAD):f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(raw)
