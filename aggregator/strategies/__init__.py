"""Aggregation strategies as objects, each beside the pure functions of its rule, and the registry the
chain's strategy names map onto.

Importing the package registers every built-in strategy. A new strategy is a :class:`Strategy` subclass
decorated with :func:`register` in a module imported below, next to its math (as Flower keeps
``compute_distances`` in ``multikrum.py``).
"""

from aggregator.strategies import (  # noqa: F401  (registers them)
    bulyan,
    centered_clip,
    coordinatewise,
    fedavg,
    fltrust,
    fltrust_guarded,
    krum,
    reputation_weighted,
)
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
