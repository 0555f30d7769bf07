"""The float32 Krum selection and the pruned sorting network give the exact paths' answers."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidUpdates
from aggregator.strategies import compiled
from aggregator.strategies.base import StrategyInputs
from aggregator.strategies.krum import (
    COMPILED_GRAM_ROWS,
    FLOAT32_ERROR,
    Krum,
    MultiKrum,
    choose,
    distances_from_gram,
    fast_distances,
    gram_float32,
    krum_ranking,
    multi_krum,
    pairwise_sq_distances,
    select_krum,
    select_multikrum,
)
from aggregator.strategies.sorting_network import pruned_comparators, reduce_sorted_columns


@pytest.mark.parametrize("seed", range(20))
def test_float32_selection_equals_the_float64_selection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    f = (n - 3) // 2
    X = rng.standard_normal((n, int(rng.integers(10, 20_000))), dtype=np.float32)
    # Near ties: clients that differ from another by a tiny nudge, and exact duplicates.
    X[1] = X[0] + np.float32(1e-6)
    X[3] = X[2]
    X += np.float32(rng.uniform(-1e3, 1e3))  # far from the origin: the centring must handle it
    exact = krum_ranking(pairwise_sq_distances(X), f)
    for m in (1, max(1, n - 2 * f - 2), n - f):
        assert sorted(choose(X, f, m).tolist()) == sorted(exact[:m].tolist())
    assert choose(X, f, 1)[0] == exact[0]


def test_float32_distances_are_within_their_bound() -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((30, 50_000), dtype=np.float32) * np.float32(100) + np.float32(5e3)
    fast = fast_distances(X)
    assert fast is not None
    D, err = fast
    assert (np.abs(D - pairwise_sq_distances(X)) <= err).all()


def test_updates_that_overflow_float32_products_take_the_float64_path() -> None:
    X = np.ones((7, 10), np.float32)
    X[6] = 1e30  # squares overflow float32, not float64
    assert fast_distances(X) is None
    np.testing.assert_allclose(multi_krum(X, 1, 6), np.ones(10, np.float32))


def test_pruned_network_keeps_only_what_the_needed_positions_depend_on() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 10, 33, 64, 100):
        X = rng.standard_normal((n, 5000), dtype=np.float32)
        middle = (n // 2,) if n % 2 else (n // 2 - 1, n // 2)
        got = reduce_sorted_columns(X, lambda rows, middle=middle: sum(rows[i] for i in middle), middle)
        expected = np.sort(X, axis=0)[list(middle)].sum(axis=0)
        np.testing.assert_array_equal(got, expected)
        assert len(pruned_comparators(n, middle)) <= len(pruned_comparators(n, None))


@pytest.mark.parametrize("seed", range(10))
def test_krum_objects_select_what_the_float64_distances_select(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 30))
    f = (n - 3) // 2
    X = rng.standard_normal((n, int(rng.integers(10, 5_000))), dtype=np.float32)
    X[1] = X[0] + np.float32(1e-6)  # a near tie, which the float32 Gram cannot decide
    X[3] = X[2]
    D = pairwise_sq_distances(X)
    inputs = StrategyInputs.of(n)
    krum_result = Krum(f).aggregate(X, inputs)
    assert krum_result.selected.tolist() == [select_krum(D, f)]
    np.testing.assert_array_equal(krum_result.vector, X[select_krum(D, f)])
    m = max(1, n - 2 * f - 2)
    chosen = MultiKrum(f, m).aggregate(X, inputs).selected
    assert chosen.tolist() == sorted(select_multikrum(D, f, m).tolist())


@pytest.mark.parametrize(("n", "d"), [(1, 1), (2, 3), (5, 4095), (10, 2 * 4096 + 5), (16, 9000)])
def test_the_compiled_float32_gram_is_within_the_bound_and_agrees_with_blas(
    n: int, d: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert n <= COMPILED_GRAM_ROWS and compiled.dot_kernels() is not None
    rng = np.random.default_rng(n + d)
    X = rng.standard_normal((n, d), dtype=np.float32) * np.float32(3) + np.float32(300)
    gram = gram_float32(X)
    monkeypatch.setattr(compiled, "dot_kernels", lambda: None)
    blas = gram_float32(X)
    assert gram is not None and blas is not None
    centred = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    exact = distances_from_gram(centred @ centred.T)
    sq = np.diag(gram)
    bound = FLOAT32_ERROR * (sq[:, None] + sq[None, :])
    assert (np.abs(distances_from_gram(gram) - exact) <= bound).all()
    assert (np.abs(distances_from_gram(blas) - exact) <= bound).all()


def test_the_compiled_gram_reports_non_finite_updates_as_the_blas_one_does() -> None:
    X = np.ones((4, 50), np.float32)
    X[2, 3] = np.nan
    assert gram_float32(X) is None
    with pytest.raises(InvalidUpdates, match=r"clients \[2\]"):
        Krum(0).aggregate(X, StrategyInputs.of(4))
