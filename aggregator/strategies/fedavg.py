"""Weighted averaging (FedAvg) and the client-weighting rules it is used with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np

from aggregator.errors import InvalidParameter, InvalidUpdates
from aggregator.strategies.base import Aggregated, Detail, Strategy, StrategyInputs
from aggregator.strategies.registry import register
from aggregator.strategies.validation import as_client_vector, as_update_matrix, raise_on_non_finite_rows

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams

WEIGHTINGS = ("samples", "fitness", "hybrid")
# Share of sample-count weighting in the hybrid rule (the rest is fitness).
HYBRID_SAMPLE_SHARE = 0.7


def normalized(weights: np.ndarray, what: str) -> np.ndarray:
    """``weights`` scaled to sum to one; :class:`InvalidParameter` (naming ``what``) when they sum to zero."""
    total = float(weights.sum())
    if total <= 0.0:
        raise InvalidParameter(f"{what} sum to zero; at least one client needs a positive weight")
    return weights / total


def fedavg(X: np.ndarray, weights: np.ndarray | list[float] | None = None) -> np.ndarray:
    """Weighted mean of the rows of ``X``.

    Contract: ``X`` is (n, d) finite floating point; ``weights`` has n finite non-negative entries, not all
    zero (None means equal weights). They are normalized here, so any positive scale gives the same result.
    Returns a float32 vector of length d. One BLAS matrix-vector product: a single pass over ``X``.
    """
    X = as_update_matrix(X, check_finite=False)
    n = X.shape[0]
    w = (
        np.full(n, 1.0 / n)
        if weights is None
        else normalized(as_client_vector(weights, n, "weights"), "weights")
    )
    with np.errstate(over="ignore", invalid="ignore"):
        result: np.ndarray = w.astype(np.float32) @ X
    # NaN/Inf in any row (even one of weight 0: 0 * inf is NaN) makes the sum non-finite: check once, here.
    if not np.isfinite(result).all():
        raise_on_non_finite_rows(X)
        raise InvalidUpdates("the weighted mean overflows float32; updates of this magnitude are invalid")
    return result


def _client_values(values: np.ndarray | list[float] | list[int], what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise InvalidParameter(f"{what} must be a non-empty 1-D sequence, got shape {v.shape}")
    return normalized(as_client_vector(v, v.size, what), what)


def sample_weights(num_samples: np.ndarray | list[int]) -> np.ndarray:
    """Weights proportional to the clients' training sample counts (McMahan et al.'s FedAvg)."""
    return _client_values(num_samples, "sample counts")


def fitness_weights(fitness: np.ndarray | list[float]) -> np.ndarray:
    """Weights proportional to the clients' fitness scores (0..100) of the previous round."""
    return _client_values(fitness, "fitness scores")


def hybrid_weights(
    num_samples: np.ndarray | list[int],
    fitness: np.ndarray | list[float],
    sample_share: float = HYBRID_SAMPLE_SHARE,
) -> np.ndarray:
    """``sample_share`` x sample weights + (1 - sample_share) x fitness weights (default 0.7 / 0.3)."""
    if not 0.0 <= sample_share <= 1.0:
        raise InvalidParameter(f"sample_share must be in [0, 1], got {sample_share}")
    s, f = sample_weights(num_samples), fitness_weights(fitness)
    if s.shape != f.shape:
        raise InvalidParameter(f"{s.shape[0]} sample counts but {f.shape[0]} fitness scores")
    return sample_share * s + (1.0 - sample_share) * f


def client_weights(
    weighting: str, num_samples: np.ndarray | list[int], fitness: np.ndarray | list[float] | None = None
) -> np.ndarray:
    """The weights of a named weighting rule (the names of the chain's ``weighting`` parameter)."""
    if weighting == "samples":
        return sample_weights(num_samples)
    if fitness is None:
        raise InvalidParameter(f"weighting {weighting!r} needs the clients' fitness scores")
    if weighting == "fitness":
        return fitness_weights(fitness)
    if weighting == "hybrid":
        return hybrid_weights(num_samples, fitness)
    raise InvalidParameter(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")


@register
class FedAvg(Strategy):
    """Weighted mean of all updates (McMahan et al.); weights by the governed ``weighting`` rule:
    ``samples`` (claimed sample counts, capped), ``fitness`` (standing reputation) or ``hybrid``."""

    name = "fedavg"

    def __init__(self, weighting: str = "samples") -> None:
        if weighting not in WEIGHTINGS:
            raise InvalidParameter(f"fedavg: unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        self.weighting = weighting

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """FedAvg with the governed weighting rule."""
        return cls(params.weighting)

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Weighted mean; every client with a positive weight is selected."""
        weights = client_weights(self.weighting, clients.samples, clients.reputation)
        return Aggregated(fedavg(X, weights), np.flatnonzero(weights > 0), {}, weights / weights.sum())

    def describe(self) -> dict[str, Detail]:
        """The weighting rule."""
        return {"weighting": self.weighting}
