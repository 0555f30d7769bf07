"""The blocked norm/dot kernel: float64-grade accuracy from float32 passes, overflow and NaN handling."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidUpdates
from aggregator.strategies.fltrust import fltrust, fltrust_coefficients
from aggregator.strategies.kernels import row_norms, sq_norms_and_dots


def test_squared_norms_and_dots_match_float64_to_1e_7_on_long_rows() -> None:
    rng = np.random.default_rng(1)
    # Rows of ~1 + noise: a float32 sum over 2^20 such squares drifts by ~1e-5 relative.
    X = (1.0 + 0.01 * rng.standard_normal((3, 1 << 20))).astype(np.float32)
    v = rng.standard_normal(1 << 20).astype(np.float32)
    sq, dots = sq_norms_and_dots(X, v)
    X64 = X.astype(np.float64)
    exact_sq = np.einsum("ij,ij->i", X64, X64)
    assert dots is not None
    assert np.allclose(sq, exact_sq, rtol=1e-7, atol=0.0)
    assert np.abs(dots - X64 @ v.astype(np.float64)).max() <= 1e-6 * np.sqrt(
        exact_sq.max() * (v.astype(np.float64) ** 2).sum()
    )


def test_rows_beyond_float32_squares_are_redone_in_float64() -> None:
    X = np.ones((2, 5000), dtype=np.float32)
    X[1] *= np.float32(1e30)
    norms = row_norms(X)
    assert np.allclose(norms, [np.sqrt(5000.0), 1e30 * np.sqrt(5000.0)], rtol=1e-6)


def test_a_nan_row_stays_non_finite_and_fltrust_names_it() -> None:
    X = np.ones((3, 100), dtype=np.float32)
    X[2, 7] = np.nan
    sq, _ = sq_norms_and_dots(X)
    assert np.isfinite(sq[:2]).all() and not np.isfinite(sq[2])
    with pytest.raises(InvalidUpdates, match=r"clients \[2\]"):
        fltrust(X, np.ones(100, dtype=np.float32))


def test_fltrust_coefficients_match_a_float64_implementation() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 300_000)).astype(np.float32)
    g0 = (rng.standard_normal(300_000) + X.mean(axis=0) * 3).astype(np.float32)
    X64, g64 = X.astype(np.float64), g0.astype(np.float64)
    norms = np.linalg.norm(X64, axis=1)
    trust = np.maximum(X64 @ g64 / (norms * np.linalg.norm(g64)), 0.0)
    expected = trust * np.linalg.norm(g64) / norms / trust.sum()
    assert np.allclose(fltrust_coefficients(X, g0), expected, rtol=1e-5, atol=1e-12)


def test_rows_of_subnormal_squares_keep_their_norm_and_trust() -> None:
    X = np.full((2, 1000), 1e-25, dtype=np.float32)
    X[1] = 1.0
    assert np.allclose(row_norms(X), [1e-25 * np.sqrt(1000.0), np.sqrt(1000.0)], rtol=1e-6)
    assert (fltrust_coefficients(X, np.ones(1000, dtype=np.float32)) > 0).all()
