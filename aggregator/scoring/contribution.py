"""What each client's update is worth on the server's validation data, and the reference it is judged by.

Pure functions over a loss callable, so they work for any model the server can evaluate:

- :func:`split_holdout`: the server's holdout, split once into a *root* part (trains the trusted reference
  update, FLTrust's root data) and a *validation* part (scores, rollback). Disjoint, so the reference is
  never scored on the data it was trained on.
- :func:`leave_one_out`: the marginal contribution of each client's share of the aggregate: the validation
  loss of the model with the full aggregate minus the loss with that client's share left out. Shares are the
  strategy's own decomposition of its aggregate (FLTrust: trust x rescaled update; a weighted mean:
  weight x update), so a client is credited with what it actually moved, not with closeness to the crowd.
  When the aggregate is a sum of shares and the loss is locally quadratic this equals the Shapley value of
  the shares' game up to the interaction terms (which split evenly), at n + 1 evaluations instead of
  the Monte Carlo estimate's many permutations. With per-example losses it also gives each contribution's
  standard error over the validation examples: a validation set of a few hundred examples cannot tell
  apart contributions closer than a few standard errors, and the scores must not rank clients by that.
- :func:`solo_gains`: the validation-loss improvement of each client's own update alone, rescaled to the
  reference's norm: evidence of harm that does not depend on what the other clients sent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.strategies.fltrust import row_norms

# Loss on the validation part of the model "current weights + delta", for a flat delta: the loss of every
# validation example (1-D, its mean is the loss), or only the mean loss when the evaluator cannot give more
# (a caller's own loss function); then contributions have no standard error.
LossOfDelta = Callable[[np.ndarray], "float | np.ndarray"]


def mean_loss(value: float | np.ndarray) -> float:
    """The loss a :data:`LossOfDelta` returned: the mean of per-example losses; +inf if not finite."""
    arr = np.asarray(value, dtype=np.float64)
    loss = float(arr.mean()) if arr.ndim else float(arr)
    return loss if np.isfinite(loss) else float("inf")


def _difference(without: float | np.ndarray, full: float | np.ndarray) -> tuple[float, float]:
    """(mean of ``without - full``, its standard error over the examples; 0 without per-example losses)."""
    a = np.asarray(without, dtype=np.float64)
    b = np.asarray(full, dtype=np.float64)
    wo, fu = mean_loss(without), mean_loss(full)
    # inf - inf (the model diverges either way) tells nothing.
    mean = 0.0 if wo == fu == np.inf else wo - fu
    if a.ndim != 1 or a.shape != b.shape or a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return mean, 0.0
    return mean, float((a - b).std(ddof=1) / np.sqrt(a.size))


def split_holdout(
    X: np.ndarray, y: np.ndarray, root_fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((X_root, y_root), (X_val, y_val)): a stratified split, ``root_fraction`` of each class to root.

    Deterministic in ``seed`` (the deployment fixes it) so every close, and an auditor, uses the same split.
    Every class with at least two examples has one in each part.
    """
    if not 0.0 < root_fraction < 1.0:
        raise InvalidParameter(f"root_fraction must be in (0, 1), got {root_fraction}")
    y = np.asarray(y)
    if len(X) != len(y) or len(y) < 2:
        raise InvalidParameter(f"need at least two labelled holdout examples, got {len(X)} x {len(y)}")
    rng = np.random.default_rng(seed)
    root: list[np.ndarray] = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        k = int(round(root_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        root.append(idx[:k])
    root_idx = np.sort(np.concatenate(root))
    mask = np.zeros(len(y), dtype=bool)
    mask[root_idx] = True
    return (X[mask], y[mask]), (X[~mask], y[~mask])


def leave_one_out(loss_of: LossOfDelta, shares: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss with the full aggregate, marginal contribution of each share, its standard error).

    ``shares`` (n, d): row i is client i's part of the aggregate (the aggregate is their sum). The marginal
    contribution m_i = loss(aggregate - share_i) - loss(aggregate): positive when the client's part lowers
    the validation loss, negative when it raises it, zero for a client the strategy gave no weight.
    A non-finite loss (the model diverges) counts as +inf: a client whose share made the model diverge
    has m_i = -inf. The standard error is that of the mean of the paired per-example differences (0 when
    ``loss_of`` gives only the mean loss, or for a share of zero).
    """
    V = np.asarray(shares, dtype=np.float32)
    if V.ndim != 2:
        raise InvalidParameter(f"shares must be a 2-D (n, d) matrix, got shape {V.shape}")
    total = V.sum(axis=0, dtype=np.float64).astype(np.float32)
    full = loss_of(total)
    marginal = np.zeros(V.shape[0])
    stderr = np.zeros(V.shape[0])
    for i in range(V.shape[0]):
        if not V[i].any():
            continue
        marginal[i], stderr[i] = _difference(loss_of(total - V[i]), full)
    return mean_loss(full), marginal, stderr


def solo_gains(loss_of: LossOfDelta, loss_before: float, X: np.ndarray, scale_to: float) -> np.ndarray:
    """loss_before - loss(update_i rescaled to norm ``scale_to``) for every row (0 for a zero update).

    Rescaling removes the one thing an honest client and a scaled attacker differ in trivially, and makes
    every client's step the size of the server's own reference step, so the comparison is about direction.
    """
    X = np.asarray(X, dtype=np.float32)
    if not (np.isfinite(scale_to) and scale_to > 0):
        raise InvalidParameter(f"scale_to must be a positive norm, got {scale_to}")
    norms = row_norms(X)
    gains = np.zeros(X.shape[0])
    for i in range(X.shape[0]):
        if norms[i] > 0.0 and np.isfinite(norms[i]):
            step = (X[i].astype(np.float64) * (scale_to / norms[i])).astype(np.float32)
            gains[i] = loss_before - mean_loss(loss_of(step))
    return gains
