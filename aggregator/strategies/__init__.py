"""Aggregation strategies as objects, and the registry the chain's strategy names map onto.

Importing the package registers every built-in strategy. A new strategy is a :class:`Strategy` subclass
decorated with :func:`register` in a module imported below.
"""

from aggregator.strategies import coordinatewise, distance, reference, weighted  # noqa: F401  (registers them)
from aggregator.strategies.base import Aggregated, ByzantineBudget, Strategy, StrategyInputs
from aggregator.strategies.registry import build, names, register, strategy_class

__all__ = [
    "Aggregated",
    "ByzantineBudget",
    "StrategyInputs",
    "Strategy",
    "build",
    "names",
    "register",
    "strategy_class",
]
