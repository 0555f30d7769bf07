"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017), with distances by the Gram identity.

The pure pieces are separate so the service and Bulyan reuse them: :func:`pairwise_sq_distances`,
:func:`krum_scores`, :func:`select_krum`, :func:`select_multikrum`.
"""

from __future__ import annotations

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.fedavg import normalized
from aggregator.validation import as_client_vector, as_update_matrix, check_f

# Columns per Gram block: the float64 copy of one block stays small (n x 16K x 8 bytes).
GRAM_BLOCK = 16384


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
    for start in range(0, d, GRAM_BLOCK):
        stop = min(d, start + GRAM_BLOCK)
        b = block[:, : stop - start]
        np.subtract(X[:, start:stop], center[start:stop], out=b, dtype=np.float64)
        gram += b @ b.T
    sq = np.diag(gram).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * gram
    np.maximum(D, 0.0, out=D)
    # Differences beyond float64 range (|x| ~ 1e154) make inf - inf = NaN: such a client is infinitely far.
    D[np.isnan(D)] = np.inf
    np.fill_diagonal(D, 0.0)
    return D


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


def krum(X: np.ndarray, f: int) -> np.ndarray:
    """The update of the client with the lowest Krum score.

    Contract: ``X`` is (n, d) finite floating point; f >= 0 is the assumed number of Byzantine clients and
    n >= 2f + 3 (refused otherwise, with the largest valid f). Returns a float32 copy of one row.
    """
    X = as_update_matrix(X)
    check_f(f, X.shape[0], 2, "krum")
    chosen: np.ndarray = X[select_krum(pairwise_sq_distances(X), f)].copy()
    return chosen


def multi_krum(
    X: np.ndarray, f: int, m: int | None = None, weights: np.ndarray | list[float] | None = None
) -> np.ndarray:
    """Mean of the m clients with the lowest Krum scores (m = None or 0 means n - f).

    Contract: as :func:`krum`, plus 1 <= m <= n - f (more than n - f would have to admit an attacker when
    f are present). ``weights`` (e.g. sample counts) weight the selected clients' mean; None means equal.
    """
    X = as_update_matrix(X)
    n = X.shape[0]
    check_f(f, n, 2, "multi_krum")
    m = m or n - f
    if not (isinstance(m, (int, np.integer)) and 1 <= m <= n - f):
        raise InvalidParameter(f"multi_krum: m must be in [1, n - f] = [1, {n - f}], got {m!r}")
    chosen = select_multikrum(pairwise_sq_distances(X), f, m)
    w = np.ones(n) if weights is None else as_client_vector(weights, n, "weights")
    # Zero weights for the others instead of copying the chosen rows: one pass over X, no (m, d) copy.
    w_chosen = np.zeros(n)
    w_chosen[chosen] = w[chosen]
    mean: np.ndarray = normalized(w_chosen, "weights of the selected clients").astype(np.float32) @ X
    return mean
