"""Reputation-weighted mean: each client's influence is min((reputation / 100)^3, cap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.strategies.base import Aggregated, Detail, Strategy, StrategyInputs
from aggregator.strategies.fedavg import fedavg
from aggregator.strategies.registry import register
from aggregator.strategies.validation import as_client_vector, as_update_matrix

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams

DEFAULT_INFLUENCE_CAP = 0.8


def reputation_influence(
    reputation: np.ndarray | list[float], cap: float = DEFAULT_INFLUENCE_CAP
) -> np.ndarray:
    """Influence of clients with reputations on the 0..100 scale: the cube favours the trusted strongly;
    the cap keeps any single client from dominating."""
    rep = np.asarray(reputation, dtype=np.float64)
    if rep.ndim != 1 or not np.isfinite(rep).all() or (rep < 0).any() or (rep > 100).any():
        raise InvalidParameter(f"reputations must be a 1-D sequence in [0, 100], got {rep.tolist()}")
    if not 0.0 < cap <= 1.0:
        raise InvalidParameter(f"influence cap must be in (0, 1], got {cap}")
    return np.minimum((rep / 100.0) ** 3, cap)


def reputation_weighted_mean(
    X: np.ndarray, reputation: np.ndarray | list[float], cap: float = DEFAULT_INFLUENCE_CAP
) -> np.ndarray:
    """Mean of the rows of ``X`` weighted by :func:`reputation_influence`.

    Contract: ``X`` is (n, d) finite floating point; ``reputation`` has n values in [0, 100], not all
    zero. Returns float32 (d,).
    """
    X = as_update_matrix(X, check_finite=False)  # fedavg checks its sum (NaN x 0 is NaN): one pass
    influence = reputation_influence(as_client_vector(reputation, X.shape[0], "reputations"), cap)
    if influence.sum() <= 0.0:
        raise InvalidParameter("every client has zero reputation; nothing can be aggregated")
    return fedavg(X, influence)


@register
class ReputationWeighted(Strategy):
    """Mean weighted by min((reputation / 100)^3, cap): trusted clients dominate, none beyond the cap."""

    name = "reputation"

    def __init__(self, cap: float = DEFAULT_INFLUENCE_CAP) -> None:
        if not 0.0 < cap <= 1.0:
            raise InvalidParameter(f"reputation: influence cap must be in (0, 1], got {cap!r}")
        self.cap = cap

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The governed influence cap."""
        return cls(params.reputation_influence_cap)

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Reputation-weighted mean; clients of zero reputation are not selected."""
        X = as_update_matrix(X, check_finite=False)  # fedavg checks its sum (NaN x 0 is NaN): one pass
        influence = reputation_influence(clients.reputation, self.cap)
        if influence.shape != (X.shape[0],):
            raise InvalidParameter(f"reputations must have one entry per client ({X.shape[0]})")
        if influence.sum() <= 0.0:
            raise InvalidParameter("every client has zero reputation; nothing can be aggregated")
        coefficients = influence / influence.sum()
        return Aggregated(fedavg(X, influence), np.flatnonzero(influence > 0), {}, coefficients)

    def describe(self) -> dict[str, Detail]:
        """The influence cap."""
        return {"cap": self.cap}
