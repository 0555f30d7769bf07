"""Distance-based selection rules: Krum, Multi-Krum, Bulyan. Each computes the pairwise distances once and
returns the clients it selected with the aggregate, so nothing recomputes them."""

from __future__ import annotations

from typing import Self

import numpy as np

from aggregator.bulyan import closest_to_median_mean, select_bulyan
from aggregator.errors import InvalidParameter, TooFewClients
from aggregator.fedavg import fedavg
from aggregator.krum import pairwise_sq_distances, select_krum, select_multikrum
from aggregator.round.params import RoundParams
from aggregator.sorting_network import reduce_sorted_columns
from aggregator.strategies.base import Aggregated, ByzantineBudget, Detail, Strategy, StrategyInputs
from aggregator.strategies.registry import register
from aggregator.validation import as_update_matrix, check_f


def budget_of(params: RoundParams) -> ByzantineBudget:
    """f = floor(byzantine_fraction * n) when the round governs the fraction, else the fixed krum_f."""
    if params.byzantine_fraction is not None:
        return ByzantineBudget(fraction=params.byzantine_fraction)
    return ByzantineBudget(f=params.krum_f)


class _KrumFamily(Strategy):
    """Krum, Multi-Krum and Bulyan: a fixed ``f`` or ``byzantine_fraction`` (f = floor(fraction x n))."""

    # Resilience condition n >= factor * f + 3 (Krum family 2, Bulyan 4).
    factor = 2

    def __init__(self, f: int | None = None, *, byzantine_fraction: float | None = None) -> None:
        try:
            self.budget = ByzantineBudget(f, byzantine_fraction)
        except InvalidParameter as exc:
            raise InvalidParameter(f"{self.name}: {exc}") from None
        self._required = self.budget.smallest_n(self._ok, self.name, self._condition())

    def _condition(self) -> str:
        return f"{self.name} needs n >= {self.factor}f + 3"

    def _ok(self, n: int, f: int) -> bool:
        return n >= self.factor * f + 3

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The strategy with the round's Byzantine assumption."""
        budget = budget_of(params)
        return cls(budget.f, byzantine_fraction=budget.fraction)

    def required_clients(self) -> int:
        """Fewest clients from which n >= factor f(n) + 3 holds (and keeps holding)."""
        return self._required

    def describe(self) -> dict[str, Detail]:
        """The Byzantine assumption (fixed f or fraction)."""
        return self.budget.describe()

    def _prepare(self, X: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        X = as_update_matrix(X)
        n = X.shape[0]
        f = self.budget.f_for(n)
        check_f(f, n, self.factor, self.name)
        return X, f, pairwise_sq_distances(X)


@register
class Krum(_KrumFamily):
    """The single update with the lowest Krum score (Blanchard et al. 2017)."""

    name = "krum"

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """The Krum winner's update; it alone is selected."""
        X, f, D = self._prepare(X)
        best = select_krum(D, f)
        coefficients = np.zeros(X.shape[0])
        coefficients[best] = 1.0
        return Aggregated(X[best].copy(), np.array([best]), {"f": f}, coefficients)


@register
class MultiKrum(_KrumFamily):
    """Sample-weighted mean of the m updates with the lowest Krum scores (m = 0: n - f)."""

    name = "multi_krum"

    def __init__(
        self, f: int | None = None, m: int | None = 0, *, byzantine_fraction: float | None = None
    ) -> None:
        m = m or 0
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise InvalidParameter(f"multi_krum: m must be a non-negative integer (0 = n - f), got {m!r}")
        self.m = int(m)
        super().__init__(f, byzantine_fraction=byzantine_fraction)

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The round's Byzantine assumption and the governed multi_krum_m."""
        budget = budget_of(params)
        return cls(budget.f, params.multi_krum_m, byzantine_fraction=budget.fraction)

    def _condition(self) -> str:
        return f"multi_krum needs n >= 2f + 3 and n - f >= m = {self.m}"

    def _ok(self, n: int, f: int) -> bool:
        return n >= 2 * f + 3 and n - f >= self.m

    def describe(self) -> dict[str, Detail]:
        """The Byzantine assumption and m."""
        return {**self.budget.describe(), "m": self.m}

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Mean of the m best-scored updates weighted by their (capped) sample counts."""
        X, f, D = self._prepare(X)
        n = X.shape[0]
        m = self.m or n - f
        if m > n - f:
            raise TooFewClients(
                f"multi_krum selects m = {m} but with n = {n}, f = {f} at most n - f = {n - f}"
            )
        chosen = select_multikrum(D, f, m)
        # Zero weights for the others instead of copying the chosen rows: one pass over X.
        weights = np.zeros(n)
        weights[chosen] = clients.samples[chosen]
        return Aggregated(fedavg(X, weights), chosen, {"f": f, "m": m}, weights / weights.sum())


@register
class Bulyan(_KrumFamily):
    """Iterated Krum selection of n - 2f updates, then per coordinate the mean of the n - 4f values closest
    to their median (El Mhamdi et al. 2018)."""

    name = "bulyan"
    factor = 4

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Bulyan's aggregate; the n - 2f updates of its Krum selection are selected."""
        X, f, D = self._prepare(X)
        selected = np.sort(select_bulyan(D, f))
        beta = selected.size - 2 * f
        vector = reduce_sorted_columns(X[selected], lambda rows: closest_to_median_mean(rows, beta))
        return Aggregated(vector, selected, {"f": f})
