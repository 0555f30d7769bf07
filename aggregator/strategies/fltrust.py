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
from aggregator.strategies.registry import register
from aggregator.strategies.validation import as_update_matrix

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams


def as_reference(reference: np.ndarray, d: int) -> np.ndarray:
    """Check the server's reference update: a finite float vector of length d with a positive norm."""
    g0 = np.asarray(reference)
    if g0.shape != (d,):
        raise InvalidParameter(f"the reference update must have shape ({d},), got {g0.shape}")
    if not np.issubdtype(g0.dtype, np.floating) or not np.isfinite(g0).all():
        raise InvalidParameter("the reference update must be finite floating point")
    if not float(np.dot(g0.astype(np.float64), g0.astype(np.float64))) > 0.0:
        raise InvalidParameter(
            "the reference update is zero: train it on root data with a positive learning rate"
        )
    return np.ascontiguousarray(g0, dtype=np.float32)


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, accumulated in float64 (a float32 sum of squares overflows at 1e19)."""
    norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    return norms


def cosine_to_reference(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """cos(x_i, g_0) for every row of ``X`` (float64). A zero row has cosine 0: it points nowhere."""
    X = as_update_matrix(X)
    g0 = as_reference(reference, X.shape[1])
    dots = np.einsum("ij,j->i", X, g0, dtype=np.float64)
    norms = row_norms(X)
    ref_norm = float(np.sqrt(np.dot(g0.astype(np.float64), g0.astype(np.float64))))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0.0, dots / (norms * ref_norm), 0.0)
    clipped: np.ndarray = np.clip(cos, -1.0, 1.0)
    return clipped


def trust_scores(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """FLTrust's trust score: ReLU of the cosine to the reference, in [0, 1]."""
    trust: np.ndarray = np.maximum(cosine_to_reference(X, reference), 0.0)
    return trust


def fltrust_coefficients(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """c_i such that the FLTrust aggregate is sum_i c_i x_i (float64, one per row).

    c_i = trust_i * ||g_0|| / ||x_i|| / sum_j trust_j. All zero when no update has positive trust: the
    paper then leaves the model unchanged. Exposed so scores can evaluate the aggregate of any subset.
    """
    X = as_update_matrix(X)
    g0 = as_reference(reference, X.shape[1])
    trust = trust_scores(X, g0)
    total = float(trust.sum())
    if total <= 0.0:
        return np.zeros(X.shape[0])
    ref_norm = float(row_norms(g0[None, :])[0])
    norms = row_norms(X)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(norms > 0.0, ref_norm / norms, 0.0)
    return trust * scale / total


def fltrust(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """FLTrust aggregate of the rows of ``X`` given the server's reference update ``g_0``.

    Contract: ``X`` is (n, d) finite floating point; ``reference`` is a finite (d,) vector with a positive
    norm. Returns float32 (d,) with norm at most ||g_0|| (a convex combination of vectors of that norm);
    zeros when every update points away from the reference. Two passes over ``X`` (cosines and norms in
    one einsum each, then one matrix-vector product).
    """
    X = as_update_matrix(X)
    c = fltrust_coefficients(X, reference)
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
    (Cao et al., NDSS 2021). Needs ``StrategyInputs.reference``."""

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
        X = as_update_matrix(X)
        trust = trust_scores(X, inputs.reference)
        coefficients = fltrust_coefficients(X, inputs.reference)
        return Aggregated(fltrust(X, inputs.reference), np.flatnonzero(trust > 0), {}, coefficients)
