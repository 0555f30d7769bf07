"""The norm/dot kernel, compiled and NumPy: float64-grade accuracy, overflow and NaN handling."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidUpdates
from aggregator.strategies import compiled
from aggregator.strategies.compiled import dot_kernels
from aggregator.strategies.dot_kernels import CHUNK
from aggregator.strategies.fltrust import fltrust, fltrust_coefficients
from aggregator.strategies.kernels import (
    gram_sq_and_dots,
    numpy_sq_norms_and_dots,
    row_norms,
    sq_norms_and_dots,
)


@pytest.fixture(params=["compiled", "numpy"])
def either_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the test on the compiled kernel and on the NumPy path (as where numba cannot be imported)."""
    if request.param == "numpy":
        monkeypatch.setattr(compiled, "dot_kernels", lambda: None)


def test_squared_norms_and_dots_match_float64_to_1e_7_on_long_rows(either_path: None) -> None:
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


def test_rows_beyond_float32_squares_are_redone_in_float64(either_path: None) -> None:
    X = np.ones((2, 5000), dtype=np.float32)
    X[1] *= np.float32(1e30)
    norms = row_norms(X)
    assert np.allclose(norms, [np.sqrt(5000.0), 1e30 * np.sqrt(5000.0)], rtol=1e-6)


def test_a_nan_row_stays_non_finite_and_fltrust_names_it(either_path: None) -> None:
    X = np.ones((3, 100), dtype=np.float32)
    X[2, 7] = np.nan
    sq, _ = sq_norms_and_dots(X)
    assert np.isfinite(sq[:2]).all() and not np.isfinite(sq[2])
    with pytest.raises(InvalidUpdates, match=r"clients \[2\]"):
        fltrust(X, np.ones(100, dtype=np.float32))


def test_fltrust_coefficients_match_a_float64_implementation(either_path: None) -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 300_000)).astype(np.float32)
    g0 = (rng.standard_normal(300_000) + X.mean(axis=0) * 3).astype(np.float32)
    X64, g64 = X.astype(np.float64), g0.astype(np.float64)
    norms = np.linalg.norm(X64, axis=1)
    trust = np.maximum(X64 @ g64 / (norms * np.linalg.norm(g64)), 0.0)
    expected = trust * np.linalg.norm(g64) / norms / trust.sum()
    assert np.allclose(fltrust_coefficients(X, g0), expected, rtol=1e-5, atol=1e-12)


def test_rows_of_subnormal_squares_keep_their_norm_and_trust(either_path: None) -> None:
    X = np.full((2, 1000), 1e-25, dtype=np.float32)
    X[1] = 1.0
    assert np.allclose(row_norms(X), [1e-25 * np.sqrt(1000.0), np.sqrt(1000.0)], rtol=1e-6)
    assert (fltrust_coefficients(X, np.ones(1000, dtype=np.float32)) > 0).all()


def test_the_compiled_norms_and_dots_are_what_runs_and_agree_with_numpy() -> None:
    # The compiled pass sums in float64 (~1e-13); the NumPy path in float32 blocks (~3e-8): within 1e-7.
    assert dot_kernels() is not None
    rng = np.random.default_rng(4)
    for n, d in ((1, 1), (2, 7), (5, 1000), (3, CHUNK + 5), (4, 2 * CHUNK)):
        X = (rng.standard_normal((n, d)) * rng.uniform(0.1, 10, size=(n, 1))).astype(np.float32)
        v = rng.standard_normal(d).astype(np.float32)
        sq, dots = sq_norms_and_dots(X, v)
        ref_sq, ref_dots = numpy_sq_norms_and_dots(X, v)
        assert dots is not None and ref_dots is not None
        np.testing.assert_allclose(sq, ref_sq, rtol=1e-7, atol=0.0)
        assert np.abs(dots - ref_dots).max() <= 1e-7 * np.sqrt(sq.max() * float(v.astype(np.float64) @ v))
        only_sq, none = sq_norms_and_dots(X)
        assert none is None and np.array_equal(only_sq, sq)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_compiled_norms_and_dots_of_a_non_finite_row_are_non_finite(bad: float) -> None:
    X = np.ones((3, CHUNK + 3), dtype=np.float32)
    X[1, CHUNK + 1] = bad
    v = np.zeros(CHUNK + 3, dtype=np.float32)  # 0 x Inf is NaN: still non-finite
    sq, dots = sq_norms_and_dots(X, v)
    assert dots is not None
    assert np.isfinite(sq[[0, 2]]).all() and not np.isfinite(sq[1]) and not np.isfinite(dots[1])


def test_compiled_norms_of_extreme_float32_rows_are_exact_in_float64() -> None:
    X = np.full((2, 1000), 3e38, dtype=np.float32)
    X[1] = np.float32(1e-45)  # the smallest subnormal
    sq, _ = sq_norms_and_dots(X)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(sq, (X64 * X64).sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 17, 50])
def test_the_one_pass_gram_matches_float64_within_its_stated_tolerance(either_path: None, n: int) -> None:
    # Rows of every count modulo the 4 x 4 tiles, several blocks (8,192 columns up to 16 rows, else 1,024)
    # and a ragged last one, a shared direction (cosines ~0.5).
    rng = np.random.default_rng(n)
    d = 2 * 8192 + 77
    X = (rng.standard_normal((n, d)) + rng.standard_normal(d)).astype(np.float32)
    v = rng.standard_normal(d).astype(np.float32)
    gram, sq, dots = gram_sq_and_dots(X, v)
    X64 = X.astype(np.float64)
    exact = X64 @ X64.T
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    # Off the diagonal: float32 products summed in float32 within each block (about 1e-6 of
    # |x_a| |x_b|); the diagonal and the dots are those of sq_norms_and_dots (float64 compiled, float32
    # BLAS blocks summed in float64 on the NumPy path).
    assert np.abs(gram - exact).max() <= 1e-5 * scale.max()
    assert np.array_equal(gram, gram.T)
    assert np.array_equal(np.diag(gram), sq)
    assert np.allclose(sq, np.diag(exact), rtol=1e-6, atol=0.0)
    assert np.abs(dots - X64 @ v.astype(np.float64)).max() <= 1e-6 * np.sqrt(
        np.diag(exact).max() * float(v.astype(np.float64) @ v)
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 17, 50])
def test_the_narrow_and_the_wide_tiles_give_the_same_bits(n: int) -> None:
    # 4 x 3 tiles (AVX2 hosts) and 6 x 4 (AVX-512): every count modulo both, several blocks and a
    # ragged last one, an extreme row (its norm redone in float64); the same sums in the same order.
    kernels = dot_kernels()
    assert kernels is not None
    rng = np.random.default_rng(100 + n)
    d = 2 * 8192 + 77
    X = (rng.standard_normal((n, d)) + rng.standard_normal(d)).astype(np.float32)
    if n > 2:
        X[2] = np.float32(3e38)
    v = rng.standard_normal(d).astype(np.float32)
    block = 8192 if n <= 16 else 1024
    out = []
    for kernel in (kernels.gram_sq_and_dots, kernels.gram_sq_and_dots_narrow):
        gram, sq, dots = np.empty((n, n)), np.empty(n), np.empty(n)
        with np.errstate(over="ignore", invalid="ignore"):
            kernel(X, v, block, gram, sq, dots)
        out.append((gram, sq, dots))
    for wide, narrow in zip(out[0], out[1], strict=True):
        assert np.array_equal(wide, narrow, equal_nan=True)


@pytest.mark.parametrize("wide", [True, False])
def test_the_host_picks_a_tiling_and_either_redoes_extreme_rows(
    wide: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernels = dot_kernels()
    assert kernels is not None
    monkeypatch.setattr(kernels, "WIDE_VECTOR_REGISTERS", wide)
    test_the_one_pass_grams_norms_and_dots_of_extreme_rows_are_redone_in_float64()


def test_the_one_pass_grams_norms_and_dots_of_extreme_rows_are_redone_in_float64() -> None:
    # The compiled Gram sums norms and dots in float32 within a block: a row whose squares overflow
    # float32 (3e38) or are subnormal (1e-45), and the dots with a vector that small, are redone in float64.
    d = 3000
    X = np.ones((6, d), dtype=np.float32)
    X[1] = np.float32(3e38)
    X[4] = np.float32(1e-45)
    X64 = X.astype(np.float64)
    for v in (np.full(d, 0.5, dtype=np.float32), np.full(d, 1e-30, dtype=np.float32)):
        _, sq, dots = gram_sq_and_dots(X, v)
        np.testing.assert_allclose(sq, (X64 * X64).sum(axis=1), rtol=1e-12, atol=0.0)
        np.testing.assert_allclose(dots, X64 @ v.astype(np.float64), rtol=1e-12, atol=0.0)


def test_the_one_pass_gram_leaves_a_nan_rows_norm_non_finite(either_path: None) -> None:
    X = np.ones((6, 3000), dtype=np.float32)
    X[4, 2999] = np.inf
    _, sq, _ = gram_sq_and_dots(X, np.ones(3000, dtype=np.float32))
    assert np.isfinite(sq[[0, 1, 2, 3, 5]]).all() and not np.isfinite(sq[4])


@pytest.mark.parametrize("n", [1, 3, 10, 40])
def test_the_one_pass_fltrust_equals_the_two_pass_rule(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator.strategies import fltrust as fltrust_module
    from aggregator.strategies.base import StrategyInputs

    monkeypatch.setattr(fltrust_module, "ONE_PASS_BYTES", 0)  # the one pass at every size
    rng = np.random.default_rng(n)
    d = 70_001
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[0] *= -1.0  # at least one row with no trust when n > 1
    g0 = (rng.standard_normal(d) + 2.0 * X.mean(axis=0)).astype(np.float32)
    result = fltrust_module.FLTrust().aggregate(X, StrategyInputs.of(n, reference=g0))
    two_pass = fltrust_coefficients(X, g0)
    # Row sums of the norms and dots over the whole row instead of 64K-column chunks: float64 rounding.
    np.testing.assert_allclose(result.coefficients, two_pass, rtol=1e-12, atol=0.0)
    expected = two_pass @ X.astype(np.float64)
    assert np.abs(result.vector - expected).max() <= 1e-5 * np.abs(expected).max() + 1e-30
    assert result.vector.dtype == np.float32
    # No row trusted: the model stays where it is.
    assert (
        not fltrust_module.FLTrust()
        .aggregate(-np.abs(X), StrategyInputs.of(n, reference=np.abs(g0)))
        .vector.any()
    )


@pytest.mark.parametrize("n", [1, 3, 10, 40])
def test_the_compiled_two_pass_fltrust_coefficients_are_the_numpy_paths(n: int) -> None:
    # Below ONE_PASS_BYTES the rule's coefficients come from one compiled call: the NumPy path's up to
    # float64 rounding (the trusts summed in row order, not pairwise), with a zero row, rows pointing away
    # from the reference, and a reference every row points away from (all zero).
    from aggregator.strategies import fltrust as fltrust_module
    from aggregator.strategies.base import StrategyInputs

    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 5001)).astype(np.float32)
    g0 = (rng.standard_normal(5001) + 2.0 * X.mean(axis=0)).astype(np.float32)
    if n >= 3:
        X[1] = 0.0
        X[2] *= -1.0
    assert X.nbytes < fltrust_module.ONE_PASS_BYTES
    away = np.ascontiguousarray(-X.sum(axis=0) - 10.0 * np.sign(X.sum(axis=0)), dtype=np.float32)
    for reference, trusted in ((g0, True), (away, False)):
        got = fltrust_module.FLTrust().aggregate(X, StrategyInputs.of(n, reference=reference)).coefficients
        assert got is not None and bool(got.any()) is trusted
        np.testing.assert_allclose(got, fltrust_coefficients(X, reference), rtol=1e-14, atol=0.0)
    X[n - 1, 7] = np.nan
    with pytest.raises(InvalidUpdates, match=rf"clients \[{n - 1}\]"):
        fltrust_module.FLTrust().aggregate(X, StrategyInputs.of(n, reference=g0))


def test_the_one_pass_fltrust_names_a_nan_row_and_weighs_subnormal_rows_in_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aggregator.strategies import fltrust as fltrust_module
    from aggregator.strategies.base import StrategyInputs

    monkeypatch.setattr(fltrust_module, "ONE_PASS_BYTES", 0)

    X = np.ones((3, 1000), dtype=np.float32)
    X[1, 5] = np.nan
    with pytest.raises(InvalidUpdates, match=r"clients \[1\]"):
        fltrust_module.FLTrust().aggregate(X, StrategyInputs.of(3, reference=np.ones(1000, dtype=np.float32)))
    tiny = np.full((2, 1000), 1e-40, dtype=np.float32)  # subnormal: weight ||g0|| / ||x|| beyond 1e30
    tiny[1] = 1.0
    out = fltrust_module.FLTrust().aggregate(
        tiny, StrategyInputs.of(2, reference=np.ones(1000, dtype=np.float32))
    )
    np.testing.assert_allclose(out.vector, fltrust(tiny, np.ones(1000, dtype=np.float32)), rtol=1e-6)
    assert np.isfinite(out.vector).all()


def test_the_one_pass_fltrust_reads_every_row_after_a_subnormal_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one pass stops weighing at a subnormal row (weight beyond 1e30) but must still measure the rows
    # after it: their norms and dots once stayed whatever memory held, so a NaN row there could pass
    # unnamed and an honest row's weight came from garbage.
    from aggregator.strategies import fltrust as fltrust_module
    from aggregator.strategies.base import StrategyInputs

    monkeypatch.setattr(fltrust_module, "ONE_PASS_BYTES", 0)
    g0 = np.ones(1000, dtype=np.float32)
    kernels = dot_kernels()
    assert kernels is not None
    X = np.ones((4, 1000), dtype=np.float32)
    X[0] = np.float32(1e-40)
    X[2, 9] = np.nan
    for garbage in (0.0, -157.5, 4.6e-310):
        out, sq, dots = np.empty(1000, dtype=np.float32), np.full(4, garbage), np.full(4, garbage)
        with np.errstate(over="ignore", invalid="ignore"):
            assert not kernels.fltrust_rows(X, g0, float(np.sqrt(1000.0)), out, sq, dots)
        assert sq[1] == sq[3] == dots[1] == dots[3] == 1000.0 and np.isnan(sq[2])
    with pytest.raises(InvalidUpdates, match=r"clients \[2\]"):
        fltrust_module.FLTrust().aggregate(X, StrategyInputs.of(4, reference=g0))
    X[2, 9] = 1.0
    result = fltrust_module.FLTrust().aggregate(X, StrategyInputs.of(4, reference=g0))
    np.testing.assert_allclose(result.vector, fltrust(X, g0), rtol=1e-6)
