"""Governed protocol parameters, read from ``ProtocolParameters`` in one call and given Python units.

Names, positions, kinds and units come from the parameter table (:mod:`fedledger.chain.param_table`); this
module checks the contract's own ``names()`` against it so a reordered or extended enum cannot be misread
silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from web3.contract import Contract

from fedledger.chain.param_table import WAD, Kind, ParamValue, live, param, table

__all__ = [
    "STRATEGY_NAMES",
    "TOKEN_FIELDS",
    "WAD",
    "WEIGHTING_NAMES",
    "ParameterMismatch",
    "ProtocolParams",
    "from_raw",
    "read_params",
]

# The chain's strategy and weighting codes, in code order; the aggregator's registry is keyed by these names.
STRATEGY_NAMES = param("strategy").values
WEIGHTING_NAMES = param("weighting").values
# Parameters that are token amounts in token wei (shown with the token's symbol).
TOKEN_FIELDS = tuple(p.name for p in live() if p.kind is Kind.TOKEN)


class ParameterMismatch(RuntimeError):
    """The contract's parameter names differ from what this code was written for."""


@dataclass(frozen=True)
class ProtocolParams(Mapping[str, ParamValue]):
    """Every live governed parameter in Python units (see :class:`~fedledger.chain.param_table.ParamDef`),
    by name in table order; typed reads with :meth:`integer`, :meth:`real`, :meth:`text`, :meth:`flag`."""

    by_name: Mapping[str, ParamValue]

    def __getitem__(self, name: str) -> ParamValue:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def integer(self, name: str) -> int:
        """A token, count or seconds parameter."""
        value = self.by_name[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} is a {param(name).kind} parameter, not an integer")
        return value

    def real(self, name: str) -> float:
        """A WAD real or score parameter."""
        value = self.by_name[name]
        if isinstance(value, (bool, str)):
            raise TypeError(f"{name} is a {param(name).kind} parameter, not a number")
        return float(value)

    def text(self, name: str) -> str:
        """An enum parameter's value name."""
        value = self.by_name[name]
        if not isinstance(value, str):
            raise TypeError(f"{name} is a {param(name).kind} parameter, not an enum")
        return value

    def flag(self, name: str) -> bool:
        """A boolean parameter."""
        value = self.by_name[name]
        if not isinstance(value, bool):
            raise TypeError(f"{name} is a {param(name).kind} parameter, not a flag")
        return value

    @property
    def reward_tiers(self) -> tuple[tuple[float, float], ...]:
        """(minimum fitness, multiplier), highest tier first."""
        return tuple(
            (self.real(f"tier{i}_min_fitness"), self.real(f"tier{i}_multiplier")) for i in range(1, 5)
        )


def from_raw(names: list[str], values: list[int]) -> ProtocolParams:
    """Convert the contract's ``names()`` and ``getAll()`` into :class:`ProtocolParams`."""
    expected = [p.name for p in table()]
    if list(names) != expected:
        raise ParameterMismatch(
            f"ProtocolParameters.names() is {list(names)}, this code expects {expected}; "
            "upgrade fedledger or redeploy the matching contracts"
        )
    return ProtocolParams(
        {p.name: p.from_raw(int(raw)) for p, raw in zip(table(), values, strict=True) if not p.reserved}
    )


def read_params(contract: Contract) -> ProtocolParams:
    """Every governed parameter of a ``ProtocolParameters`` contract, from ``names()`` and ``getAll()``."""
    return from_raw(list(contract.functions.names().call()), list(contract.functions.getAll().call()))
