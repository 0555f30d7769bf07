"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017), with distances by the Gram identity.

The pure pieces are separate so the service and Bulyan reuse them: :func:`pairwise_sq_distances`,
:func:`krum_scores`, :func:`select_krum`, :func:`select_multikrum`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np

from aggregator.errors import AggregationError, InvalidParameter, TooFewClients
from aggregator.strategies import compiled as _compiled
from aggregator.strategies.base import Aggregated, ByzantineBudget, Detail, Strategy, StrategyInputs
from aggregator.strategies.blas import single_threaded
from aggregator.strategies.fedavg import fedavg, normalized
from aggregator.strategies.registry import register
from aggregator.strategies.validation import (
    as_client_vector,
    as_update_matrix,
    check_f,
    raise_on_non_finite_rows,
)

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams

# Columns per Gram block: the float64 copy of one block stays small (n x 16K x 8 bytes).
GRAM_BLOCK = 16384
# Columns per float32 Gram block: short dot products keep the float32 rounding error small (see
# FLOAT32_ERROR); each block's n x n product is accumulated in float64.
GRAM32_BLOCK = 4096
# Relative error assumed for one float32 block product, a multiple of sqrt(block) unit roundoffs: the
# usual statistical bound for a dot product with rounding errors of random sign (Higham, ch. 3), with a
# safety factor of 8. Decisions closer than this are taken again in float64 (see ``fast_distances``).
FLOAT32_ERROR = 8.0 * GRAM32_BLOCK**0.5 * float(np.finfo(np.float32).eps)
# Up to this many rows the float32 Gram is a compiled loop (aggregator.strategies.dot_kernels): a BLAS
# product of n x 4096 by 4096 x n per block is mostly overhead for few rows (n = 10, d = 1M: 17 ms of CPU
# against about 2 ms compiled); above it BLAS's register-blocked product wins.
COMPILED_GRAM_ROWS = 16


def pairwise_sq_distances(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``X``: ||a||^2 + ||b||^2 - 2 a.b.

    The rows are centred first (distances are translation invariant) so the identity does not cancel
    catastrophically when updates are close together but far from the origin, and each block of columns
    is widened to float64 before its BLAS product (in float32 the identity loses ~1e-4 relative accuracy,
    enough to flip a Krum choice between near-equal candidates). Returns a symmetric (n, n) float64 matrix with a zero
    diagonal. Cost: one pass over ``X`` for the mean and one for the Gram matrix, no loop over pairs.
    """
    X = as_update_matrix(X)
    n, d = X.shape
    # float64 throughout: a float32 mean or difference overflows on large finite updates (an attacker's
    # 1e38 entries), and the NaN distances that follow would let the attacker win the selection.
    center = X.mean(axis=0, dtype=np.float64)
    gram = np.zeros((n, n), dtype=np.float64)
    block = np.empty((n, min(d, GRAM_BLOCK)), dtype=np.float64)
    with single_threaded():
        for start in range(0, d, GRAM_BLOCK):
            stop = min(d, start + GRAM_BLOCK)
            b = block[:, : stop - start]
            np.subtract(X[:, start:stop], center[start:stop], out=b, dtype=np.float64)
            gram += b @ b.T
    return distances_from_gram(gram)


def distances_from_gram(gram: np.ndarray) -> np.ndarray:
    """||a||^2 + ||b||^2 - 2 a.b from a float64 Gram matrix, clipped at 0, NaN as +inf, zero diagonal."""
    sq = np.diag(gram).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * gram
    np.maximum(D, 0.0, out=D)
    # Differences beyond float64 range (|x| ~ 1e154) make inf - inf = NaN: such a client is infinitely far.
    D[np.isnan(D)] = np.inf
    np.fill_diagonal(D, 0.0)
    return D


def gram_float32(X: np.ndarray) -> np.ndarray | None:
    """Gram matrix of the mean-centred rows of a float32 ``X`` from float32 block products summed in
    float64, or None if anything overflowed (huge or non-finite entries: use the float64 path).

    Half the memory traffic and twice the arithmetic rate of the float64 path; its error is bounded
    by ``FLOAT32_ERROR * (|a|^2 + |b|^2)`` per distance, which the callers check their decision against.
    """
    n, d = X.shape
    gram = np.zeros((n, n), dtype=np.float64)
    compiled = _compiled.dot_kernels()
    if compiled is not None and n <= COMPILED_GRAM_ROWS and X.dtype == np.float32 and X.flags.c_contiguous:
        with np.errstate(over="ignore", invalid="ignore"):
            compiled.centred_gram(X, GRAM32_BLOCK, gram)
        return gram if np.isfinite(gram).all() else None
    width = min(d, GRAM32_BLOCK)
    block = np.empty((n, width), dtype=np.float32)
    center = np.empty(width, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"), single_threaded():
        for start in range(0, d, GRAM32_BLOCK):
            stop = min(d, start + GRAM32_BLOCK)
            b, c, columns = block[:, : stop - start], center[: stop - start], X[:, start:stop]
            # The per-coordinate mean, a block at a time: X is read from memory once, the block then
            # stays in cache for the subtraction and the product.
            np.mean(columns, axis=0, out=c)
            np.subtract(columns, c, out=b)
            gram += b @ b.T
    # NaN or Inf in X (or products beyond float32) make the Gram non-finite: the caller then checks X.
    return gram if np.isfinite(gram).all() else None


def fast_distances(X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(distances, error bound per distance) from :func:`gram_float32`, or None where it overflowed."""
    gram = gram_float32(X)
    if gram is None:
        return None
    sq = np.diag(gram)
    return distances_from_gram(gram), FLOAT32_ERROR * (sq[:, None] + sq[None, :])


def _score_error(D: np.ndarray, err: np.ndarray, f: int) -> np.ndarray:
    """Bound on each Krum score's error: it sums ``closest`` distances, each off by at most its row's
    largest error (a sum of the k smallest entries moves by at most k times the largest perturbation)."""
    closest = max(1, D.shape[0] - f - 2)
    bound: np.ndarray = closest * err.max(axis=1)
    return bound


def _separated(scores: np.ndarray, bound: np.ndarray, ranking: np.ndarray, cut: int, ordered: bool) -> bool:
    """True if each client ranked before ``cut`` beats each client from ``cut`` on by more than the sum
    of their error bounds, so the float64 ranking has the same first ``cut`` clients; with ``ordered``,
    at every cut from 1 to ``cut`` (then it also has them in the same order)."""
    upper = np.maximum.accumulate((scores + bound)[ranking])
    lower = np.minimum.accumulate((scores - bound)[ranking][::-1])[::-1]
    if cut >= ranking.size:
        cut = ranking.size - 1
        if not ordered:
            return True
    if not ordered:
        return bool(upper[cut - 1] < lower[cut])
    return bool((upper[:cut] < lower[1 : cut + 1]).all())


def choose(X: np.ndarray, f: int, m: int, ordered: bool = True) -> np.ndarray:
    """The m clients with the lowest Krum scores, best first, as the float64 distances of
    :func:`pairwise_sq_distances` and :func:`krum_ranking` choose and order them (``ordered`` False: the
    same set, in an order that may differ where two of them nearly tie, which spares the float64 pass
    for near ties inside the set).

    Distances come from the float32 Gram first; only when the choice is closer than its error bound (a
    near tie, or an exact tie that the secondary key must break) or the float32 products overflowed are
    they recomputed in float64, so the result is the float64 path's at about half its cost.
    """
    fast = fast_distances(X)
    if fast is not None:
        D, err = fast
        scores = krum_scores(D, f)
        ranking = np.argsort(scores, kind="stable")
        if _separated(scores, _score_error(D, err, f), ranking, m, ordered):
            return ranking[:m]
    elif not np.isfinite(X).all():
        raise_on_non_finite_rows(X)
    return krum_ranking(pairwise_sq_distances(X), f)[:m]


def krum_scores(D: np.ndarray, f: int) -> np.ndarray:
    """Krum score of each client: the sum of its n - f - 2 smallest distances to the other clients."""
    n = D.shape[0]
    closest = max(1, n - f - 2)
    off = D.copy()
    np.fill_diagonal(off, np.inf)
    scores: np.ndarray
    if closest >= n - 1:
        scores = np.where(np.isinf(off), 0.0, off).sum(axis=1)
    else:
        scores = np.partition(off, closest - 1, axis=1)[:, :closest].sum(axis=1)
    return scores


def krum_ranking(D: np.ndarray, f: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Client indices from best to worst Krum score.

    Exact ties are structural, not rare: when only one neighbour counts (small n), two mutual nearest
    neighbours always tie. They are broken by the sum of all distances (the more central client first),
    not by index, so the choice does not depend on the order in which clients were listed. ``tiebreak``
    overrides that key (Bulyan passes the sums over all clients, so its rounds agree with each other).
    """
    return np.lexsort((D.sum(axis=1) if tiebreak is None else tiebreak, krum_scores(D, f)))


def select_krum(D: np.ndarray, f: int, tiebreak: np.ndarray | None = None) -> int:
    """Index of the client with the lowest Krum score."""
    return int(krum_ranking(D, f, tiebreak)[0])


def select_multikrum(D: np.ndarray, f: int, m: int) -> np.ndarray:
    """Indices of the m clients with the lowest Krum scores, best first (scores computed once)."""
    return krum_ranking(D, f)[:m]


def _checked(X: np.ndarray, f: int, strategy: str) -> np.ndarray:
    """``X`` as float32 and ``f`` checked, with no pass over ``X`` for finiteness: :func:`choose` finds
    NaN and Inf from the Gram matrix. When ``f`` is refused, non-finite updates are reported first, as
    every other strategy reports them."""
    X = as_update_matrix(X, check_finite=False)
    try:
        check_f(f, X.shape[0], 2, strategy)
    except AggregationError:
        as_update_matrix(X)
        raise
    return X


def krum(X: np.ndarray, f: int) -> np.ndarray:
    """The update of the client with the lowest Krum score.

    Contract: ``X`` is (n, d) finite floating point; f >= 0 is the assumed number of Byzantine clients and
    n >= 2f + 3 (refused otherwise, with the largest valid f). Returns a float32 copy of one row.
    """
    X = _checked(X, f, "krum")
    chosen: np.ndarray = X[int(choose(X, f, 1)[0])].copy()
    return chosen


def multi_krum(
    X: np.ndarray, f: int, m: int | None = None, weights: np.ndarray | list[float] | None = None
) -> np.ndarray:
    """Mean of the m clients with the lowest Krum scores (m = None or 0 means n - f).

    Contract: as :func:`krum`, plus 1 <= m <= n - f (more than n - f would have to admit an attacker when
    f are present). ``weights`` (e.g. sample counts) weight the selected clients' mean; None means equal.
    """
    X = _checked(X, f, "multi_krum")
    n = X.shape[0]
    m = m or n - f
    if not (isinstance(m, (int, np.integer)) and 1 <= m <= n - f):
        raise InvalidParameter(f"multi_krum: m must be in [1, n - f] = [1, {n - f}], got {m!r}")
    chosen = choose(X, f, m, ordered=False)  # a mean: the order of the set is irrelevant
    w = np.ones(n) if weights is None else as_client_vector(weights, n, "weights")
    # Zero weights for the others instead of copying the chosen rows: one pass over X, no (m, d) copy.
    w_chosen = np.zeros(n)
    w_chosen[chosen] = w[chosen]
    with single_threaded():
        mean: np.ndarray = normalized(w_chosen, "weights of the selected clients").astype(np.float32) @ X
    return mean


def budget_of(params: RoundParams) -> ByzantineBudget:
    """f = floor(byzantine_fraction * n) when the round governs the fraction, else the fixed krum_f."""
    if params.byzantine_fraction is not None:
        return ByzantineBudget(fraction=params.byzantine_fraction)
    return ByzantineBudget(f=params.krum_f)


class KrumFamily(Strategy):
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

    def _ranked(self, X: np.ndarray, m: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
        """X as float32, f, and the set of the m (None: n - f) best clients through :func:`choose`: the
        float32 Gram where its error bound separates them from the rest, the float64 distances otherwise."""
        X = as_update_matrix(X, check_finite=False)
        f = self.budget.f_for(X.shape[0])
        X = _checked(X, f, self.name)
        return X, f, choose(X, f, X.shape[0] - f if m is None else m, ordered=False)


@register
class Krum(KrumFamily):
    """The single update with the lowest Krum score (Blanchard et al. 2017)."""

    name = "krum"

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """The Krum winner's update; it alone is selected."""
        X, f, ranked = self._ranked(X, 1)  # one client: its set is its order
        best = int(ranked[0])
        coefficients = np.zeros(X.shape[0])
        coefficients[best] = 1.0
        return Aggregated(X[best].copy(), np.array([best]), {"f": f}, coefficients)


@register
class MultiKrum(KrumFamily):
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
        X = as_update_matrix(X, check_finite=False)
        n = X.shape[0]
        f = self.budget.f_for(n)
        m = self.m or n - f
        if m > n - f:
            as_update_matrix(X)  # non-finite updates are reported first, as by every strategy
            raise TooFewClients(
                f"multi_krum selects m = {m} but with n = {n}, f = {f} at most n - f = {n - f}"
            )
        X, f, ranked = self._ranked(X, m)
        chosen = np.sort(ranked)  # index order: the set is the float64 path's, its order need not be
        # Zero weights for the others instead of copying the chosen rows: one pass over X.
        weights = np.zeros(n)
        weights[chosen] = clients.samples[chosen]
        return Aggregated(fedavg(X, weights), chosen, {"f": f, "m": m}, weights / weights.sum())
