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
- :func:`batched_contributions`: both of the above for a built-in model in one pass over the updates.

Memory: a share is c_i x_i, and no function here builds the (n, d) matrix of shares or any (n, d)
temporary: the aggregate of the shares is one matrix-vector product (:func:`weighted_sum`)
and each candidate model exists one at a time (or, batched, only as its first-layer response).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.strategies.fltrust import row_norms
from fedledger.models import ValidationBatch

# Loss on the validation part of the model "current weights + delta", for a flat delta: the loss of every
# validation example (1-D, its mean is the loss), or only the mean loss when the evaluator cannot give more
# (a caller's own loss function); then contributions have no standard error.
LossOfDelta = Callable[[np.ndarray], "float | np.ndarray"]
# Bytes at most of the first-layer responses of one chunk of rows in :func:`batched_contributions`, and at
# most this share of the updates' bytes: bounded, whatever n and d.
_CHUNK_BYTES = 1 << 25
_CHUNK_SHARE = 16


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


def weighted_sum(X: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """sum_i c_i x_i (float32): one float32 matrix-vector product, a single pass over the updates with no
    (n, d) temporary. Against the float64 sum of the shares it differs by float32 rounding (about 1e-7
    relative per coordinate at n = 100). A sum over coordinates: a worker holding a coordinate range
    computes that range of it."""
    X = np.asarray(X, dtype=np.float32)
    c = np.asarray(coefficients, dtype=np.float64)
    if X.ndim != 2 or c.shape != (X.shape[0],):
        raise InvalidParameter(f"need one coefficient per row of a 2-D matrix, got {c.shape} for {X.shape}")
    out: np.ndarray = c.astype(np.float32) @ X
    return out


def aggregate_of(X: np.ndarray, coefficients: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """:func:`weighted_sum` plus ``offset`` (float32 (d,), None: nothing): the aggregate when a part of it is
    nobody's share (the server's reference as a member of the guarded rule's aggregate)."""
    total = weighted_sum(X, coefficients)
    if offset is None:
        return total
    part = np.asarray(offset, dtype=np.float32).reshape(-1)
    if part.shape != total.shape:
        raise InvalidParameter(f"the aggregate's offset must have {total.size} values, got {part.shape}")
    out: np.ndarray = total + part
    return out


def _share(X: np.ndarray, c: np.ndarray, i: int) -> np.ndarray:
    """Client i's share c_i x_i, rounded to float32."""
    share: np.ndarray = (c[i] * X[i].astype(np.float64)).astype(np.float32)
    return share


def leave_one_out(
    loss_of: LossOfDelta, X: np.ndarray, coefficients: np.ndarray, offset: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss with the full aggregate, marginal contribution of each share, its standard error).

    Client i's share of the aggregate is c_i x_i (``coefficients`` c, rows of ``X``; the aggregate is their
    sum); the shares are never built all at once, one d-vector at a time. The marginal contribution
    m_i = loss(aggregate - share_i) - loss(aggregate): positive when the client's part lowers the
    validation loss, negative when it raises it, zero for a client the strategy gave no weight.
    A non-finite loss (the model diverges) counts as +inf: a client whose share made the model diverge
    has m_i = -inf. The standard error is that of the mean of the paired per-example differences (0 when
    ``loss_of`` gives only the mean loss, or for a share of zero). ``offset``: a part of the aggregate that
    is nobody's share (:func:`aggregate_of`); it stays in every leave-one-out aggregate.
    """
    X, c = _rows_and_coefficients(X, coefficients)
    total = aggregate_of(X, c, offset)
    full = loss_of(total)
    marginal = np.zeros(X.shape[0])
    stderr = np.zeros(X.shape[0])
    for i in range(X.shape[0]):
        share = _share(X, c, i)
        if not share.any():
            continue
        marginal[i], stderr[i] = _difference(loss_of(total - share), full)
    return mean_loss(full), marginal, stderr


def _rows_and_coefficients(X: np.ndarray, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise InvalidParameter(f"updates must be a 2-D (n, d) matrix, got shape {X.shape}")
    c = np.asarray(coefficients, dtype=np.float64)
    if c.shape != (X.shape[0],) or not np.isfinite(c).all():
        raise InvalidParameter(f"coefficients must be {X.shape[0]} finite values, got shape {c.shape}")
    return X, c


def _solo_scales(X: np.ndarray, scale_to: float, norms: np.ndarray | None) -> np.ndarray:
    """scale_to / ||x_i|| for every row (0 for a zero or non-finite one: it is not evaluated)."""
    if not (np.isfinite(scale_to) and scale_to > 0):
        raise InvalidParameter(f"scale_to must be a positive norm, got {scale_to}")
    r = row_norms(X) if norms is None else np.asarray(norms, dtype=np.float64)
    ok = (r > 0.0) & np.isfinite(r)
    scales: np.ndarray = np.zeros(X.shape[0])
    scales[ok] = scale_to / r[ok]
    return scales


def solo_gains(
    loss_of: LossOfDelta, loss_before: float, X: np.ndarray, scale_to: float, norms: np.ndarray | None = None
) -> np.ndarray:
    """loss_before - loss(update_i rescaled to norm ``scale_to``) for every row (0 for a zero update).

    Rescaling removes the one thing an honest client and a scaled attacker differ in trivially, and makes
    every client's step the size of the server's own reference step, so the comparison is about direction.
    ``norms``: the rows' norms when the caller has them (:func:`aggregator.strategies.fltrust.row_norms`).
    """
    X = np.asarray(X, dtype=np.float32)
    scales = _solo_scales(X, scale_to, norms)
    gains = np.zeros(X.shape[0])
    for i in np.flatnonzero(scales).tolist():
        step = (X[i].astype(np.float64) * scales[i]).astype(np.float32)
        gains[i] = loss_before - mean_loss(loss_of(step))
    return gains


@dataclass(frozen=True)
class Contributions:
    """What :func:`batched_contributions` measures: the leave-one-out marginals and the solo gains."""

    full_loss: float
    marginal: np.ndarray
    stderr: np.ndarray
    solo_gain: np.ndarray


def batched_contributions(
    batch: ValidationBatch,
    X: np.ndarray,
    coefficients: np.ndarray,
    loss_before: float,
    scale_to: float,
    norms: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> Contributions:
    """:func:`leave_one_out` and :func:`solo_gains` of a built-in model in one pass over the updates.

    Every candidate is a linear combination of the rows (the aggregate less one share, one rescaled row), so
    its first-layer response is the same combination of the rows' responses
    (:class:`fedledger.models.ValidationBatch`): each row's response is computed once, a chunk of rows at a
    time, and both of its candidates are evaluated from it. 2n + 1 candidate models for n + 1 first-layer
    products, with memory of one chunk of responses. Equal to the two functions on the same model up to
    float32 rounding of the logits. ``offset``: as :func:`leave_one_out`'s.
    """
    X, c = _rows_and_coefficients(X, coefficients)
    n = X.shape[0]
    norms = row_norms(X) if norms is None else np.asarray(norms, dtype=np.float64)
    scales = _solo_scales(X, scale_to, norms)
    total = aggregate_of(X, c, offset)[None, :]
    total_response, total_head = batch.responses(total)[0], batch.heads(total)[0]
    full = batch.losses(total_response, total_head)
    marginal, stderr, solo = np.zeros(n), np.zeros(n), np.zeros(n)
    # A chunk's responses (and the product's scratch: 8 bytes per value) within a 16th of the updates.
    budget = min(_CHUNK_BYTES, X.nbytes // _CHUNK_SHARE)
    chunk = max(1, min(n, budget // (8 * max(total_response.size, 1))))
    for i0 in range(0, n, chunk):
        rows = X[i0 : i0 + chunk]
        responses, heads = batch.responses(rows), batch.heads(rows)
        for k in range(rows.shape[0]):
            i = i0 + k
            # A zero share (no weight, or a zero row) moved nothing; a row with a non-finite norm is evaluated.
            if c[i] != 0.0 and norms[i] != 0.0:
                ci = np.float32(c[i])
                without = batch.losses(total_response - ci * responses[k], total_head - ci * heads[k])
                marginal[i], stderr[i] = _difference(without, full)
            if scales[i] > 0.0:
                si = np.float32(scales[i])
                solo[i] = loss_before - mean_loss(batch.losses(si * responses[k], si * heads[k]))
    return Contributions(mean_loss(full), marginal, stderr, solo)
