"""The one table of strategies, by the names the chain's ``strategy`` parameter uses.

The chain's code -> name mapping is ``fedledger.chain.params.STRATEGY_NAMES`` (the contract's enum order;
the core cannot import this package); every name there must have a class here, which a test checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from aggregator.errors import UnknownStrategy
from fedledger.chain.params import STRATEGY_NAMES

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams
    from aggregator.strategies.base import Strategy

S = TypeVar("S", bound="type[Strategy]")

_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: S) -> S:
    """Class decorator: make a strategy available under its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    """Registered strategy names: the chain's in its code order, then any the chain cannot select."""
    order = {name: code for code, name in enumerate(STRATEGY_NAMES)}
    return tuple(sorted(_REGISTRY, key=lambda name: order.get(name, len(order))))


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name``; :class:`UnknownStrategy` lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownStrategy(f"unknown strategy {name!r}; valid: {', '.join(names())}") from None


def build(params: RoundParams) -> Strategy:
    """The strategy the round's parameters name, configured by them (typed errors if they are invalid)."""
    return strategy_class(params.strategy).from_params(params)
