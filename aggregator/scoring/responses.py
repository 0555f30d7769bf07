"""Every per-row measure of a round's scores from one pass of first-layer responses (a built-in model).

:func:`aggregator.scoring.contribution.batched_contributions` and
:func:`aggregator.scoring.novelty.batched_novel_gains` each compute first-layer responses of d-sized rows:
the updates' (twice: the marginals and solo gains, then the context gains), and the residuals' (built in d
first, r = M Z: another n x n x d product). The responses are linear in the row, so every candidate the
scores evaluate is a combination of the updates' responses and the reference's: the aggregate's is
sum c_i R(x_i), a residual's is sum_j M_ij R(x_j) + M_in R(g). :func:`response_measures` computes R(x_i)
once for every update (n x m x d multiply-adds, m the examples used) and derives the rest in the
responses' space (n x n x m x width, no d in it). Equal to the two functions up to float32 rounding of
the logits (the sums are associated differently), so a close uses it only where it already estimates:
when the per-row scores use a subsample of the validation examples (:mod:`aggregator.scoring.budget`);
below that budget the scores are computed exactly as before.

Memory: the responses of every update at once, n x m x width float32; :func:`fits` says whether that is
within a share of the updates' bytes (else the caller keeps the chunked functions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.scoring.contribution import _difference, _solo_scales, mean_loss
from aggregator.scoring.novelty import _gram_with_reference, novelty_coefficients
from fedledger.models import ValidationBatch

# The responses of every update are held at once when they take at most this share of the updates' bytes
# or _FLOOR_BYTES, whichever is larger.
_SHARE = 8
_FLOOR_BYTES = 1 << 25


@dataclass(frozen=True)
class RowMeasures:
    """The per-row measures :func:`aggregator.scoring.round.score_round` needs, with their standard errors."""

    marginal: np.ndarray
    stderr: np.ndarray
    solo_gain: np.ndarray
    novel: np.ndarray
    novel_stderr: np.ndarray
    context: np.ndarray


def fits(batch: ValidationBatch, X: np.ndarray) -> bool:
    """Whether every row's responses on ``batch`` fit the memory bound (see the module docstring)."""
    n = X.shape[0]
    return bool(4 * n * int(batch.base.size) <= max(X.nbytes // _SHARE, _FLOOR_BYTES))


def _all_responses(batch: ValidationBatch, X: np.ndarray) -> np.ndarray:
    """(n, m, width) float32 responses of every row, computed a chunk of rows at a time (the product's
    scratch within the bound :func:`fits` checks)."""
    n = X.shape[0]
    out = np.empty((n,) + batch.base.shape, dtype=np.float32)
    chunk = max(1, min(n, max(X.nbytes // _SHARE, _FLOOR_BYTES) // (8 * max(batch.base.size, 1))))
    for i0 in range(0, n, chunk):
        out[i0 : i0 + chunk] = batch.stacked_responses(X[i0 : i0 + chunk])
    return out


def response_measures(
    batch: ValidationBatch,
    X: np.ndarray,
    coefficients: np.ndarray,
    nominal: np.ndarray,
    reference: np.ndarray,
    loss_before: float,
    scale_to: float,
    norms: np.ndarray,
    gram: np.ndarray | None = None,
    reference_coefficient: float = 0.0,
) -> RowMeasures:
    """The leave-one-out marginals (and standard errors), the solo gains, the novel gains (and standard
    errors) and the context gains of every row, as :func:`~aggregator.scoring.contribution.batched_contributions`
    and :func:`~aggregator.scoring.novelty.batched_novel_gains` (with and without the residual) define them,
    from one pass of responses over the updates. ``loss_before``: the current model's loss on ``batch``.
    ``reference_coefficient``: the aggregate's part that is the reference (nobody's share), in every
    candidate that holds the aggregate."""
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    c = np.asarray(coefficients, dtype=np.float64)
    k_out = np.asarray(nominal, dtype=np.float64)
    g = np.asarray(reference, dtype=np.float32).reshape(-1)
    r = np.asarray(norms, dtype=np.float64)
    if c.shape != (n,) or k_out.shape != (n,) or r.shape != (n,) or g.shape != (d,):
        raise InvalidParameter(
            "one coefficient, nominal weight and norm per row and a reference of the rows' size"
        )
    if not (np.isfinite(c).all() and np.isfinite(k_out).all() and (k_out >= 0).all()):
        raise InvalidParameter("coefficients must be finite and nominal weights finite and non-negative")
    R = _all_responses(batch, X)
    H = batch.heads(X)
    Rg, Hg = batch.responses(g[None, :])[0], batch.heads(g[None, :])[0]
    c32 = c.astype(np.float32)
    with np.errstate(all="ignore"):
        ra = np.tensordot(c32, R, axes=1)
        ha = c32 @ H
        if reference_coefficient:
            ra = ra + np.float32(reference_coefficient) * Rg
            ha = ha + np.float32(reference_coefficient) * Hg
    full = batch.losses(ra, ha)

    marginal, stderr, solo = np.zeros(n), np.zeros(n), np.zeros(n)
    scales = _solo_scales(X, scale_to, r)
    for i in range(n):
        if c[i] != 0.0 and r[i] != 0.0:
            ci = np.float32(c[i])
            marginal[i], stderr[i] = _difference(batch.losses(ra - ci * R[i], ha - ci * H[i]), full)
        if scales[i] > 0.0:
            si = np.float32(scales[i])
            solo[i] = loss_before - mean_loss(batch.losses(si * R[i], si * H[i]))

    k = np.where(c != 0.0, c, k_out)
    M = novelty_coefficients(_gram_with_reference(X, g) if gram is None else gram, c)
    rows = np.flatnonzero(k != 0.0)
    novel, novel_se, context = np.zeros(n), np.zeros(n), np.zeros(n)
    with np.errstate(all="ignore"):
        coef = M[rows].astype(np.float32)
        residual_R = np.tensordot(coef[:, :n], R, axes=1) + coef[:, n][:, None, None] * Rg
        residual_H = coef[:, :n] @ H + coef[:, n][:, None] * Hg
    for j, i in enumerate(rows.tolist()):
        ki = np.float32(k[i])
        for response, head, out, se in (
            (residual_R[j], residual_H[j], novel, novel_se),
            (R[i], H[i], context, None),
        ):
            rq, hq = ki * response, ki * head
            if c[i] != 0.0:
                value, error = _difference(batch.losses(ra - rq, ha - hq), full)
            else:
                value, error = _difference(full, batch.losses(ra + rq, ha + hq))
            out[i] = value
            if se is not None:
                se[i] = error
    return RowMeasures(marginal, stderr, solo, novel, novel_se, context)
