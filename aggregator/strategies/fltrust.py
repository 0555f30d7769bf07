"""FLTrust (Cao, Fang, Liu, Gong, NDSS 2021): aggregation anchored on a reference update the server trains
on its own root data in the same round.

trust_i = ReLU(cos(g_i, g_0)); every update is rescaled to the reference's norm; the aggregate is the
trust-weighted mean of the rescaled updates. An update pointing away from the reference gets no weight,
and no update can weigh more than the reference's length however it is scaled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.strategies.base import Aggregated, Strategy, StrategyInputs
from aggregator.strategies.compiled import dot_kernels as _compiled_kernels
from aggregator.strategies.kernels import row_norms as row_norms  # re-exported: callers import it here
from aggregator.strategies.kernels import sq_norms_and_dots
from aggregator.strategies.registry import register
from aggregator.strategies.validation import as_update_matrix, raise_on_non_finite_rows

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams


def as_reference(reference: np.ndarray, d: int) -> np.ndarray:
    """Check the server's reference update: a finite float vector of length d with a positive norm."""
    return reference_and_norm(reference, d)[0]


def reference_and_norm(reference: np.ndarray, d: int) -> tuple[np.ndarray, float]:
    """The checked float32 reference and its norm, from one pass over it (it is a row's size: at n = 10
    the old six casts and passes over it cost as much as the whole matrix)."""
    g0 = np.asarray(reference)
    if g0.shape != (d,):
        raise InvalidParameter(f"the reference update must have shape ({d},), got {g0.shape}")
    if not np.issubdtype(g0.dtype, np.floating):
        raise InvalidParameter("the reference update must be finite floating point")
    with np.errstate(over="ignore"):
        g0 = np.ascontiguousarray(g0, dtype=np.float32)
    # The kernel's float64 sum is finite exactly when every float32 entry is (also after the cast).
    sq = float(sq_norms_and_dots(g0[None, :])[0][0])
    if not np.isfinite(sq):
        raise InvalidParameter("the reference update must be finite floating point")
    if not sq > 0.0:
        raise InvalidParameter(
            "the reference update is zero: train it on root data with a positive learning rate"
        )
    return g0, float(np.sqrt(sq))


def norms_and_cosines(X: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Row norms, cos(x_i, g_0) and ||g_0|| from one blocked pass over float32 ``X``, which also serves
    as its finiteness check (a NaN/Inf row has a non-finite norm)."""
    g0, ref_norm = reference_and_norm(reference, X.shape[1])
    sq, dots = sq_norms_and_dots(X, g0)
    assert dots is not None
    return cosines_from(X, sq, dots, ref_norm)


def cosines_from(
    X: np.ndarray, sq: np.ndarray, dots: np.ndarray, ref_norm: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`norms_and_cosines` from the rows' squared norms and dots with g_0 (a pass that computed
    them); raises :class:`InvalidUpdates` naming the rows of ``X`` with NaN or Inf if a norm is not finite."""
    if not np.isfinite(sq).all():
        raise_on_non_finite_rows(X)
    norms = np.sqrt(sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0.0, dots / (norms * ref_norm), 0.0)
    clipped: np.ndarray = np.clip(cos, -1.0, 1.0)
    return norms, clipped, ref_norm


def cosine_to_reference(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """cos(x_i, g_0) for every row of ``X`` (float64). A zero row has cosine 0: it points nowhere."""
    X = as_update_matrix(X, check_finite=False)
    return norms_and_cosines(X, reference)[1]


def trust_scores(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """FLTrust's trust score: ReLU of the cosine to the reference, in [0, 1]."""
    trust: np.ndarray = np.maximum(cosine_to_reference(X, reference), 0.0)
    return trust


def fltrust_coefficients(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """c_i such that the FLTrust aggregate is sum_i c_i x_i (float64, one per row).

    c_i = trust_i * ||g_0|| / ||x_i|| / sum_j trust_j. All zero when no update has positive trust: the
    paper then leaves the model unchanged. Exposed so scores can evaluate the aggregate of any subset.
    """
    X = as_update_matrix(X, check_finite=False)
    return _coefficients_of(*norms_and_cosines(X, reference))


def _coefficients_of(norms: np.ndarray, cos: np.ndarray, ref_norm: float) -> np.ndarray:
    trust = np.maximum(cos, 0.0)
    total = float(trust.sum())
    if total <= 0.0:
        return np.zeros(norms.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(norms > 0.0, ref_norm / norms, 0.0)
    c: np.ndarray = trust * scale / total
    return c


def fltrust(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """FLTrust aggregate of the rows of ``X`` given the server's reference update ``g_0``.

    Contract: ``X`` is (n, d) finite floating point; ``reference`` is a finite (d,) vector with a positive
    norm. Returns float32 (d,) with norm at most ||g_0|| (a convex combination of vectors of that norm);
    zeros when every update points away from the reference. Two passes over ``X`` (norms, cosines and the
    finiteness check in one blocked pass, then one matrix-vector product).
    """
    X = as_update_matrix(X, check_finite=False)
    return _apply(fltrust_coefficients(X, reference), X)


def _apply(c: np.ndarray, X: np.ndarray) -> np.ndarray:
    """sum_i c_i x_i as float32 (d,), zeros when every c_i is 0."""
    if not c.any():
        return np.zeros(X.shape[1], dtype=np.float32)
    if np.abs(c).max() < 1e30:
        narrow: np.ndarray = (c.astype(np.float32) @ X).astype(np.float32, copy=False)
        return narrow
    # A row of subnormal entries has a rescaling factor beyond float32: do that rare product in float64.
    wide: np.ndarray = (c @ X.astype(np.float64)).astype(np.float32)
    return wide


@register
class FLTrust(Strategy):
    """Mean of the updates rescaled to the reference's norm, weighted by ReLU(cos to the reference)
    (Cao et al., NDSS 2021). Needs ``StrategyInputs.reference``. The paper's rule, kept selectable: an
    attacker who knows the reference buys weight by agreeing with it (see ``fltrust_guarded``)."""

    name = "fltrust"

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """FLTrust has no governed parameter; its reference comes with the round's inputs."""
        return cls()

    def aggregate(self, X: np.ndarray, inputs: StrategyInputs) -> Aggregated:
        """FLTrust aggregate; clients with positive trust are selected."""
        if inputs.reference is None:
            raise InvalidParameter(
                "fltrust needs the server's reference update (trained on its root data) in the round's "
                "inputs; none was given"
            )
        X = as_update_matrix(X, check_finite=False)
        one_pass = _one_pass(X, inputs.reference)
        if one_pass is not None:
            vector, coefficients = one_pass
        else:
            # Once: the coefficients are positive exactly where the trust is (a zero row has cosine 0).
            coefficients = _two_pass_coefficients(X, inputs.reference)
            vector = _apply(coefficients, X)
        return Aggregated(vector, np.flatnonzero(coefficients > 0), {}, coefficients)


def _two_pass_coefficients(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """:func:`fltrust_coefficients` for the two-pass path: the norm and dot pass and the coefficients in one
    compiled call (``dot_kernels.fltrust_coefficients``) instead of a dozen small NumPy calls, a tenth of
    the rule at n = 10, d = 100K (measured: 0.15 -> 0.12 ms); the NumPy path where numba cannot be imported."""
    compiled = _compiled_kernels()
    if compiled is None:
        return fltrust_coefficients(X, reference)
    g0, ref_norm = reference_and_norm(reference, X.shape[1])
    coefficients = np.empty(X.shape[0])
    if not compiled.fltrust_coefficients(X, g0, ref_norm, coefficients):
        raise_on_non_finite_rows(X)
        return fltrust_coefficients(X, reference)  # not reached: a non-finite norm means a NaN/Inf entry
    return coefficients


# Below this size X stays in the last-level cache between the two passes, and one BLAS product over all
# rows at once beats adding them row by row (measured: n = 10, d = 100K, 4 MB: 0.16 ms two-pass against
# 0.20 ms; 20 MB and more: the one pass 15-30 % faster).
ONE_PASS_BYTES = 8 << 20


def _one_pass(X: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(aggregate, coefficients) from one pass over ``X`` (compiled: each row's norm and dot, then its
    weighted row added while the row is in cache), or None where the compiled kernel does not apply or
    ``X`` is smaller than :data:`ONE_PASS_BYTES` (the caller then takes the two-pass path: norms and
    cosines, then one matrix-vector product, whose second pass then reads ``X`` from cache).

    The aggregate is sum_i float32(w_i) x_i summed in float32 row by row, times float32(1 / sum_j trust_j),
    w_i = trust_i ||g_0|| / ||x_i||: the two-pass path's sum_i float32(c_i) x_i up to float32 rounding
    (about 1e-7 relative per term; tests/aggregator/test_kernels.py holds them within 1e-5)."""
    compiled = _compiled_kernels()
    if compiled is None or X.nbytes < ONE_PASS_BYTES:
        return None
    g0, ref_norm = reference_and_norm(reference, X.shape[1])
    n, d = X.shape
    out = np.empty(d, dtype=np.float32)
    sq, dots = np.empty(n), np.empty(n)
    with np.errstate(over="ignore", invalid="ignore"):
        complete = compiled.fltrust_rows(X, g0, ref_norm, out, sq, dots)
    norms, cos, _ = cosines_from(X, sq, dots, ref_norm)  # raises on NaN/Inf rows
    coefficients = _coefficients_of(norms, cos, ref_norm)
    if not complete:
        return _apply(coefficients, X), coefficients
    total = float(np.maximum(cos, 0.0).sum())
    if not total > 0.0:
        return np.zeros(d, dtype=np.float32), coefficients
    out *= np.float32(1.0 / total)
    return out, coefficients
