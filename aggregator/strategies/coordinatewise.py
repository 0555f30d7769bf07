"""Coordinate-wise robust statistics as strategies: trimmed mean and median."""

from __future__ import annotations

from typing import Self

import numpy as np

from aggregator.coordinate import median, trim_count, trimmed_mean
from aggregator.errors import InvalidParameter
from aggregator.round.params import RoundParams
from aggregator.strategies.base import Aggregated, Detail, Strategy, StrategyInputs
from aggregator.strategies.registry import register


@register
class TrimmedMean(Strategy):
    """Per coordinate, the mean after dropping the floor(beta n) smallest and largest values.

    Governed by ``byzantine_fraction`` when the round has it (beta = the fraction, so floor(beta n) = the
    f the Krum family assumes), else by ``trim_fraction``. Every client can contribute to some coordinate,
    so all are reported as selected.
    """

    name = "trimmed_mean"

    def __init__(self, beta: float) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 0.5:
            raise InvalidParameter(
                f"trimmed_mean: beta must be in [0, 0.5), got {beta!r}; lower the governed fraction"
            )
        self.beta = float(beta)

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """beta = byzantine_fraction if governed, else trim_fraction."""
        fraction = params.byzantine_fraction
        return cls(params.trim_fraction if fraction is None else fraction)

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Coordinate-wise trimmed mean of all rows."""
        n = np.shape(X)[0]
        return Aggregated(
            trimmed_mean(X, self.beta), np.arange(n), {"trimmed_each_side": trim_count(n, self.beta)}
        )

    def describe(self) -> dict[str, Detail]:
        """The trimmed fraction."""
        return {"beta": self.beta}


@register
class Median(Strategy):
    """Coordinate-wise median; no parameters."""

    name = "median"

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The median has nothing to configure."""
        return cls()

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Coordinate-wise median of all rows."""
        return Aggregated(median(X), np.arange(np.shape(X)[0]), {})
