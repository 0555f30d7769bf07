"""Centered clipping (Karimireddy, He, Jaggi, ICML 2021) with bucketing for non-IID clients (Karimireddy,
He, Jaggi, ICLR 2022), and server momentum (Hsu et al. 2019, Flower's FedAvgM).

Centered clipping moves a centre v towards the updates, each update's pull clipped to radius tau:
v <- v + mean_i clip_tau(x_i - v). An attacker moves v by at most tau / n per iteration however far it
sends its update. tau = 0 means adaptive: the median distance to the current centre, so the rule needs
no scale knowledge and at most half the clients are ever clipped.

Bucketing averages random groups of ``bucket_size`` updates first: with heterogeneous honest clients the
bucket means are closer together than the updates, which makes the clipping radius reflect honest spread
instead of data heterogeneity. Attackers can contaminate up to ``bucket_size`` times their share of
buckets, so bucket_size * byzantine_fraction must stay below 1/2 (refused otherwise by the caller's
parameter check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.strategies.base import Aggregated, Detail, Strategy, StrategyInputs
from aggregator.strategies.coordinatewise import median
from aggregator.strategies.kernels import row_norms
from aggregator.strategies.registry import register
from aggregator.strategies.validation import as_update_matrix

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams


def _check(tau: float, iterations: int) -> None:
    if not (np.isfinite(tau) and tau >= 0.0):
        raise InvalidParameter(f"centered_clip: tau must be finite and >= 0 (0 = adaptive), got {tau}")
    if not (
        isinstance(iterations, (int, np.integer)) and not isinstance(iterations, bool) and iterations >= 1
    ):
        raise InvalidParameter(f"centered_clip: iterations must be an integer >= 1, got {iterations!r}")


def clip_weights(distances: np.ndarray, tau: float) -> np.ndarray:
    """min(1, tau / ||x_i - v||): the factor each client's pull towards itself is scaled by."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(distances > tau, tau / np.maximum(distances, np.finfo(np.float64).tiny), 1.0)


def centered_clip(
    X: np.ndarray, center: np.ndarray | None = None, tau: float = 0.0, iterations: int = 3
) -> np.ndarray:
    """Centered clipping of the rows of ``X`` around ``center``.

    Contract: ``X`` is (n, d) finite floating point; ``center`` a finite (d,) vector (None: the coordinate
    median of ``X``, a robust start when the round has no momentum to start from); tau >= 0 (0 = the
    median distance to the centre, recomputed each iteration); iterations >= 1. Returns float32 (d,).
    Each iteration is two passes over ``X`` (distances, then the clipped mean as one matrix-vector product).
    """
    X = as_update_matrix(X)
    n, d = X.shape
    _check(tau, iterations)
    if center is None:
        v = median(X).astype(np.float64)
    else:
        v = np.asarray(center, dtype=np.float64)
        if v.shape != (d,) or not np.isfinite(v).all():
            raise InvalidParameter(f"centered_clip: the centre must be a finite vector of shape ({d},)")
    for _ in range(iterations):
        # A far attacker's row minus v can overflow float32: then (only then) redo it in float64.
        v32 = v.astype(np.float32)
        distances = _distances(X, v32)
        if not np.isfinite(distances).all():
            diff = X.astype(np.float64) - v[None, :]
            distances = row_norms(diff)
            radius = float(np.median(distances)) if tau == 0.0 else tau
            v = v + clip_weights(distances, radius) / n @ diff
            continue
        radius = float(np.median(distances)) if tau == 0.0 else tau
        w = clip_weights(distances, radius) / n
        v = v + _weighted_diff(X, v32, w.astype(np.float32)).astype(np.float64)
    return v.astype(np.float32)


# Columns per block of X - v: the (n, block) difference stays in cache instead of an (n, d) temporary
# that is written, faulted in and read twice per iteration.
_BLOCK_BYTES = 1 << 19


def _blocks(X: np.ndarray) -> range:
    n, d = X.shape
    return range(0, d, max(1024, _BLOCK_BYTES // (4 * n)))


def _distances(X: np.ndarray, v32: np.ndarray) -> np.ndarray:
    """||x_i - v|| in float64 from float32 differences built block by block (inf if one overflows)."""
    step = _blocks(X).step
    sq = np.zeros(X.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for start in _blocks(X):
            diff = X[:, start : start + step] - v32[start : start + step]
            sq += np.einsum("ij,ij->i", diff, diff)
    distances: np.ndarray = np.sqrt(sq)
    return distances


def _weighted_diff(X: np.ndarray, v32: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_i w_i (x_i - v), float32, the differences rebuilt per block as in :func:`_distances`."""
    step = _blocks(X).step
    out = np.empty(X.shape[1], dtype=np.float32)
    for start in _blocks(X):
        out[start : start + step] = w @ (X[:, start : start + step] - v32[start : start + step])
    return out


def bucket_means(X: np.ndarray, bucket_size: int, rng: np.random.Generator) -> np.ndarray:
    """Means of random groups of ``bucket_size`` rows (the last group may be smaller).

    ``rng`` draws the permutation; the caller seeds it from data the attackers cannot choose before they
    submit (round id and submission hashes), so buckets are reproducible by an auditor. bucket_size = 1
    returns the rows in permuted order (no averaging).
    """
    X = as_update_matrix(X)
    if not (
        isinstance(bucket_size, (int, np.integer)) and not isinstance(bucket_size, bool) and bucket_size >= 1
    ):
        raise InvalidParameter(f"bucket_size must be an integer >= 1, got {bucket_size!r}")
    n = X.shape[0]
    order = rng.permutation(n)
    buckets = -(-n // bucket_size)
    # One (buckets, n) averaging matrix: a single BLAS product over X instead of a loop of copies.
    A = np.zeros((buckets, n), dtype=np.float32)
    for b in range(buckets):
        members = order[b * bucket_size : (b + 1) * bucket_size]
        A[b, members] = 1.0 / len(members)
    means: np.ndarray = A @ X
    return means


def bucketed_centered_clip(
    X: np.ndarray,
    rng: np.random.Generator,
    center: np.ndarray | None = None,
    tau: float = 0.0,
    iterations: int = 3,
    bucket_size: int = 1,
) -> np.ndarray:
    """Centered clipping of bucket means (ICLR 2022's "bucketing" wrapper around ICML 2021's rule)."""
    _check(tau, iterations)
    return centered_clip(bucket_means(X, bucket_size, rng), center, tau, iterations)


def server_momentum(previous: np.ndarray | None, aggregate: np.ndarray, beta: float) -> np.ndarray:
    """FedAvgM's buffer: v_t = beta v_{t-1} + aggregate (server learning rate 1); v_t is the applied update.

    ``previous`` None (first round) is zero. beta = 0 returns the aggregate unchanged.
    """
    if not (np.isfinite(beta) and 0.0 <= beta < 1.0):
        raise InvalidParameter(f"server momentum must be in [0, 1), got {beta}")
    agg = np.asarray(aggregate, dtype=np.float32)
    if previous is None or beta == 0.0:
        return agg.copy()
    prev = np.asarray(previous, dtype=np.float32)
    if prev.shape != agg.shape:
        raise InvalidParameter(f"momentum buffer shape {prev.shape} differs from the update's {agg.shape}")
    return (np.float32(beta) * prev + agg).astype(np.float32)


@register
class CenteredClip(Strategy):
    """Centered clipping (Karimireddy et al., ICML 2021) of bucket means (ICLR 2022 bucketing).

    A bucket mixes ``bucket_size`` clients, so f Byzantine clients can spoil up to f buckets: with the
    governed Byzantine fraction b, b x bucket_size must stay below one half or the rule guarantees nothing,
    which is refused at construction.
    """

    name = "centered_clip"

    def __init__(
        self,
        tau: float = 0.0,
        iterations: int = 3,
        bucket_size: int = 1,
        byzantine_fraction: float | None = None,
    ) -> None:
        if not (np.isfinite(tau) and tau >= 0):
            raise InvalidParameter(f"centered_clip: tau must be >= 0 (0 = adaptive), got {tau!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise InvalidParameter(f"centered_clip: iterations must be an integer >= 1, got {iterations!r}")
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
            raise InvalidParameter(f"centered_clip: bucket_size must be an integer >= 1, got {bucket_size!r}")
        if byzantine_fraction is not None and byzantine_fraction * bucket_size >= 0.5:
            raise InvalidParameter(
                f"centered_clip: byzantine_fraction {byzantine_fraction} x bucket_size {bucket_size} must be "
                "below 0.5 (more spoiled buckets than clean ones otherwise); lower one of them through governance"
            )
        self.tau, self.iterations, self.bucket_size = float(tau), iterations, bucket_size
        self.byzantine_fraction = byzantine_fraction

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The governed radius, iterations and bucket size."""
        return cls(
            params.centered_clip_tau,
            params.centered_clip_iterations,
            params.bucket_size,
            params.byzantine_fraction,
        )

    def aggregate(self, X: np.ndarray, inputs: StrategyInputs) -> Aggregated:
        """Centered clipping around ``inputs.center`` (None: the coordinate median); all clients selected."""
        X = as_update_matrix(X)
        if self.bucket_size > 1:
            if inputs.rng is None:
                raise InvalidParameter("centered_clip with buckets needs the round's rng in its inputs")
            vector = bucketed_centered_clip(
                X, inputs.rng, inputs.center, self.tau, self.iterations, self.bucket_size
            )
        else:
            vector = centered_clip(X, inputs.center, self.tau, self.iterations)
        return Aggregated(vector, np.arange(X.shape[0]), {})

    def describe(self) -> dict[str, Detail]:
        """Radius, iterations, bucket size."""
        return {"tau": self.tau, "iterations": self.iterations, "bucket_size": self.bucket_size}
