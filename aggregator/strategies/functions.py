"""The numeric aggregation functions in one namespace, and :func:`aggregate` by strategy name.

Each function is pure, of a stacked float32 matrix ``X`` (n_clients, n_params), returning a float32 vector
of n_params; their contracts are in their docstrings. Strategy objects (parameters, required clients,
selected clients) and the registry the chain's names map onto are in :mod:`aggregator.strategies`;
:func:`aggregate` is a thin function over that registry.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from aggregator import strategies
from aggregator.errors import InvalidParameter
from aggregator.strategies.bulyan import bulyan, select_bulyan
from aggregator.strategies.coordinatewise import median, trim_count, trimmed_mean
from aggregator.strategies.fedavg import (
    client_weights,
    fedavg,
    fitness_weights,
    hybrid_weights,
    sample_weights,
)
from aggregator.strategies.krum import (
    krum,
    krum_ranking,
    krum_scores,
    multi_krum,
    pairwise_sq_distances,
    select_krum,
    select_multikrum,
)
from aggregator.strategies.reputation_weighted import reputation_influence, reputation_weighted_mean
from aggregator.strategies.validation import as_update_matrix

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


# Keyword arguments of :func:`aggregate` that are per-client or per-round inputs, not parameters.
_INPUTS = {
    "weights": "samples",
    "reputation": "reputation",
    "reference": "reference",
    "center": "center",
    "rng": "rng",
}

# Every strategy name :func:`aggregate` accepts (the registry's; the chain's names in code order first).
STRATEGIES: tuple[str, ...] = strategies.names()


def aggregate(strategy: str, X: np.ndarray, **params: Any) -> np.ndarray:
    """Run the named strategy with its parameters, e.g. ``aggregate("trimmed_mean", X, beta=0.2)``.

    A thin function over the strategy registry for scripts and tests. Parameters are the strategy class's
    constructor arguments: fedavg (weighting), trimmed_mean (beta), median (), krum / bulyan (f or
    byzantine_fraction), multi_krum (f or byzantine_fraction, m), reputation (cap), fltrust (),
    centered_clip (tau, iterations, bucket_size). Inputs: ``weights`` (per-client weights, e.g. sample
    counts), ``reputation`` (0..100 per client), ``reference`` (FLTrust), ``center`` and ``rng``
    (centered clipping).
    """
    cls = strategies.strategy_class(strategy)
    inputs = {_INPUTS[k]: params.pop(k) for k in list(params) if k in _INPUTS}
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:
        raise InvalidParameter(f"{strategy}: {exc}") from exc
    X = as_update_matrix(X, check_finite=False)
    return cls(**params).aggregate(X, strategies.StrategyInputs.of(X.shape[0], **inputs)).vector
