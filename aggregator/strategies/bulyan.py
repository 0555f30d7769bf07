"""Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018).

1. Selection: theta = n - 2f times, pick the Krum winner among the clients not yet picked (Krum with the
   same f on the shrinking set, distances computed once).
2. Aggregation: per coordinate, the mean of the beta = theta - 2f selected values closest to the selected
   values' median.
"""

from __future__ import annotations

import numpy as np

from aggregator.strategies.base import Aggregated, StrategyInputs
from aggregator.strategies.compiled import CLOSEST_TO_MEDIAN, network_reduce
from aggregator.strategies.coordinatewise import median_of_sorted
from aggregator.strategies.krum import KrumFamily, pairwise_sq_distances, select_krum
from aggregator.strategies.registry import register
from aggregator.strategies.sorting_network import reduce_sorted_columns
from aggregator.strategies.validation import as_update_matrix, check_f


def select_bulyan(D: np.ndarray, f: int) -> np.ndarray:
    """Indices of the theta = n - 2f clients Bulyan's iterated Krum selects, in selection order.

    Krum ties (frequent here: late rounds count a single neighbour) go to the client with the smaller sum
    of distances to all n clients.
    """
    n = D.shape[0]
    centrality = D.sum(axis=1)
    remaining = list(range(n))
    chosen: list[int] = []
    for _ in range(n - 2 * f):
        sub = D[np.ix_(remaining, remaining)]
        best = select_krum(sub, f, tiebreak=centrality[remaining])
        chosen.append(remaining.pop(best))
    return np.asarray(chosen)


def closest_to_median_mean(rows: list[np.ndarray], beta: int) -> np.ndarray:
    """Per column, the mean of the ``beta`` sorted values closest to the column median.

    In sorted order the beta closest values form a contiguous window, the one whose farther end is
    nearest the median; there are theta - beta + 1 candidate windows, compared with vector operations.
    """
    theta = len(rows)
    med = median_of_sorted(rows)
    window_sum = np.zeros(rows[0].shape, dtype=np.float64)
    for row in rows[:beta]:
        window_sum += row
    best_cost = np.maximum(med - rows[0], rows[beta - 1] - med)
    best_sum = window_sum.copy()
    for start in range(1, theta - beta + 1):
        window_sum += rows[start + beta - 1]
        window_sum -= rows[start - 1]
        cost = np.maximum(med - rows[start], rows[start + beta - 1] - med)
        better = cost < best_cost
        np.copyto(best_cost, cost, where=better)
        np.copyto(best_sum, window_sum, where=better)
    return (best_sum / beta).astype(np.float32)


def bulyan(X: np.ndarray, f: int) -> np.ndarray:
    """Bulyan aggregate of the rows of ``X``.

    Contract: ``X`` is (n, d) finite floating point, f >= 0 and n >= 4f + 3 (refused otherwise, with the
    largest valid f). Returns float32 (d,).
    """
    X = as_update_matrix(X)
    n = X.shape[0]
    check_f(f, n, 4, "bulyan")
    selected = np.sort(select_bulyan(pairwise_sq_distances(X), f))
    return closest_to_median_columns(X, selected, selected.size - 2 * f)


def closest_to_median_columns(X: np.ndarray, selected: np.ndarray, beta: int) -> np.ndarray:
    """Per coordinate, the mean of the ``beta`` values of the rows ``selected`` closest to their median
    (compiled when available, else the NumPy network; the results are identical)."""
    out = network_reduce(X, CLOSEST_TO_MEDIAN, beta, rows=selected)
    if out is None:
        out = reduce_sorted_columns(X[selected], lambda rows: closest_to_median_mean(rows, beta))
    return out


@register
class Bulyan(KrumFamily):
    """Iterated Krum selection of n - 2f updates, then per coordinate the mean of the n - 4f values closest
    to their median (El Mhamdi et al. 2018)."""

    name = "bulyan"
    factor = 4

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Bulyan's aggregate; the n - 2f updates of its Krum selection are selected."""
        X, f, D = self._prepare(X)
        selected = np.sort(select_bulyan(D, f))
        vector = closest_to_median_columns(X, selected, selected.size - 2 * f)
        return Aggregated(vector, selected, {"f": f})
