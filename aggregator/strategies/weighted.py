"""Weighted means: FedAvg under a weighting rule, and the reputation-weighted mean."""

from __future__ import annotations

from typing import Self

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.fedavg import WEIGHTINGS, client_weights, fedavg
from aggregator.reputation_weighted import DEFAULT_INFLUENCE_CAP, reputation_influence
from aggregator.round.params import RoundParams
from aggregator.strategies.base import Aggregated, Detail, Strategy, StrategyInputs
from aggregator.strategies.registry import register
from aggregator.validation import as_update_matrix


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
        X = as_update_matrix(X)
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
