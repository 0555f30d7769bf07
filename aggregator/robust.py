"""Every aggregation strategy, and selection by the names the chain's ``strategy`` parameter uses.

Each strategy is a pure function of a stacked float32 matrix ``X`` (n_clients, n_params) returning a
float32 vector of n_params; their contracts are in their docstrings.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from aggregator.bulyan import bulyan, select_bulyan
from aggregator.coordinate import median, trim_count, trimmed_mean
from aggregator.errors import InvalidParameter, UnknownStrategy
from aggregator.fedavg import client_weights, fedavg, fitness_weights, hybrid_weights, sample_weights
from aggregator.krum import (
    krum,
    krum_ranking,
    krum_scores,
    multi_krum,
    pairwise_sq_distances,
    select_krum,
    select_multikrum,
)
from aggregator.reputation_weighted import reputation_influence, reputation_weighted_mean

__all__ = [
    "STRATEGIES",
    "aggregate",
    "bulyan",
    "client_weights",
    "fedavg",
    "fitness_weights",
    "hybrid_weights",
    "krum",
    "krum_ranking",
    "krum_scores",
    "median",
    "multi_krum",
    "pairwise_sq_distances",
    "reputation_influence",
    "reputation_weighted_mean",
    "sample_weights",
    "select_bulyan",
    "select_krum",
    "select_multikrum",
    "trim_count",
    "trimmed_mean",
]


def _fedavg(X: np.ndarray, *, weights: Any = None) -> np.ndarray:
    return fedavg(X, weights)


def _trimmed_mean(X: np.ndarray, *, beta: float) -> np.ndarray:
    return trimmed_mean(X, beta)


def _median(X: np.ndarray) -> np.ndarray:
    return median(X)


def _krum(X: np.ndarray, *, f: int) -> np.ndarray:
    return krum(X, f)


def _multi_krum(X: np.ndarray, *, f: int, m: int | None = None, weights: Any = None) -> np.ndarray:
    return multi_krum(X, f, m, weights)


def _bulyan(X: np.ndarray, *, f: int) -> np.ndarray:
    return bulyan(X, f)


def _reputation(X: np.ndarray, *, reputation: Any, cap: float = 0.8) -> np.ndarray:
    return reputation_weighted_mean(X, reputation, cap)


# Order = the chain's strategy codes 0..6 (ProtocolParameters.Strategy).
STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "fedavg": _fedavg,
    "trimmed_mean": _trimmed_mean,
    "median": _median,
    "krum": _krum,
    "multi_krum": _multi_krum,
    "bulyan": _bulyan,
    "reputation": _reputation,
}


def aggregate(strategy: str, X: np.ndarray, **params: Any) -> np.ndarray:
    """Run the named strategy with its parameters, e.g. ``aggregate("trimmed_mean", X, beta=0.2)``.

    Parameters by strategy: fedavg (weights), trimmed_mean (beta), median (), krum (f),
    multi_krum (f, m, weights), bulyan (f), reputation (reputation, cap).
    """
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise UnknownStrategy(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}") from None
    try:
        inspect.signature(fn).bind(X, **params)
    except TypeError as exc:
        raise InvalidParameter(f"{strategy}: {exc}") from exc
    return fn(X, **params)
