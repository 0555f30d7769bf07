"""Input contracts shared by the strategies."""

from __future__ import annotations

import numpy as np

from aggregator.errors import InvalidParameter, InvalidUpdates, TooFewClients


def as_update_matrix(X: np.ndarray, check_finite: bool = True) -> np.ndarray:
    """Check and return ``X`` as a C-contiguous float32 (n_clients, n_params) matrix.

    Float32 input is used as is (no copy); float64 is converted. NaN or Inf anywhere is refused: one
    non-finite value would poison every order statistic and every distance. ``check_finite=False`` is for
    callers whose result is non-finite whenever an input is (a weighted sum) and who check that instead,
    saving a pass over ``X``.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise InvalidUpdates(f"updates must be a 2-D (n_clients, n_params) matrix, got shape {X.shape}")
    n, d = X.shape
    if n == 0 or d == 0:
        raise InvalidUpdates(f"updates must hold at least one client and one parameter, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise InvalidUpdates(f"updates must be floating point, got {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    # One BLAS pass: a row sum is NaN/Inf whenever the row holds one (or overflows float32, which the
    # exact per-element check then tells apart).
    if check_finite:
        with np.errstate(over="ignore", invalid="ignore"):
            row_sums = X @ np.ones(d, dtype=np.float32)
        if not np.isfinite(row_sums).all():
            raise_on_non_finite_rows(X)
    return X


def raise_on_non_finite_rows(X: np.ndarray) -> None:
    """Name the clients whose updates hold NaN or Inf, if any."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise InvalidUpdates(f"updates of clients {bad.tolist()} contain NaN or Inf")


def as_client_vector(values: np.ndarray | list[float], n: int, what: str) -> np.ndarray:
    """A finite, non-negative float64 vector of length ``n`` (weights, reputations, sample counts)."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,):
        raise InvalidParameter(f"{what} must have one entry per client ({n}), got shape {v.shape}")
    if not np.isfinite(v).all() or (v < 0).any():
        raise InvalidParameter(f"{what} must be finite and non-negative, got {v.tolist()}")
    return v


def check_f(f: int, n: int, factor: int, strategy: str) -> None:
    """Refuse ``f`` unless ``n >= factor * f + 3`` (Krum: factor 2, Bulyan: factor 4); never clamp."""
    if not isinstance(f, (int, np.integer)) or isinstance(f, bool) or f < 0:
        raise InvalidParameter(f"{strategy}: f must be a non-negative integer, got {f!r}")
    needed = factor * f + 3
    if n < needed:
        largest = (n - 3) // factor
        hint = (
            f"with n={n} the largest valid f is {largest}"
            if largest >= 0
            else f"n={n} is below 3, too few for {strategy}"
        )
        raise TooFewClients(f"{strategy} needs n >= {factor}f+3 = {needed} for f={f}, got n={n}; {hint}")
