"""The compiled coordinate-wise kernels against their NumPy reference: bit for bit, odd shapes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidUpdates
from aggregator.strategies import compiled
from aggregator.strategies.bulyan import closest_to_median_columns, closest_to_median_mean
from aggregator.strategies.coordinatewise import median, median_of_sorted, trim_count, trimmed_mean
from aggregator.strategies.order_kernels import LANES
from aggregator.strategies.sorting_network import reduce_sorted_columns

# n = 1 and 2 (degenerate networks), odd and even, a power of two, the largest network size; d = 1, inside
# one block of lanes, exactly one block, one past it, several blocks with a ragged end.
SHAPES = [
    (n, d) for n in (1, 2, 3, 4, 7, 10, 16, 33, 100, 256) for d in (1, 5, LANES, LANES + 1, 3 * LANES + 7)
]


def bits(a: np.ndarray) -> np.ndarray:
    """float32 as raw bits, so that -0.0 and +0.0 (and NaN payloads) are told apart."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.int32)


def awkward(n: int, d: int, seed: int) -> np.ndarray:
    """Normal values with many exact ties, +0.0 and -0.0 (updates of frozen weights are signed zeros)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X[rng.random((n, d)) < 0.2] = 0.0
    X[rng.random((n, d)) < 0.2] = -0.0
    X[rng.random((n, d)) < 0.1] = 1.0
    return X


def numpy_trimmed(X: np.ndarray, k: int) -> np.ndarray:
    n = X.shape[0]
    scale = np.float32(1.0 / (n - 2 * k))

    def mean_of_middle(rows: list[np.ndarray]) -> np.ndarray:
        total = rows[k].copy()
        for row in rows[k + 1 : n - k]:
            total += row
        return total * scale

    return reduce_sorted_columns(X, mean_of_middle, tuple(range(k, n - k)), as_set=True)


@pytest.fixture(params=[False, True], ids=["scratch_row", "in_place"])
def sort_form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways the kernel sorts a block (the host's timing picks one, ``compiled.sort_in_place``): each
    must give the NumPy reference's bits, whichever this machine would choose."""
    form = bool(request.param)
    monkeypatch.setattr(compiled, "sort_in_place", lambda: form)
    return form


def test_the_compiled_kernels_are_what_runs() -> None:
    # numba is a pinned dependency: a silent fall back to NumPy would lose the speed without a failure.
    assert compiled.kernels() is not None


@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_median_is_bit_identical_to_the_numpy_network(n: int, d: int, sort_form: bool) -> None:
    X = awkward(n, d, seed=n * 1000 + d)
    middle = (n // 2,) if n % 2 else (n // 2 - 1, n // 2)
    got = median(X)
    assert np.array_equal(bits(got), bits(reduce_sorted_columns(X, median_of_sorted, middle)))
    assert np.array_equal(got, np.median(X, axis=0))


@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_trimmed_mean_is_bit_identical_to_the_numpy_network(n: int, d: int, sort_form: bool) -> None:
    X = awkward(n, d, seed=n * 1000 + d + 1)
    for beta in (0.1, 0.2, 0.45):
        k = trim_count(n, beta)
        if k == 0:
            continue
        assert np.array_equal(bits(trimmed_mean(X, beta)), bits(numpy_trimmed(X, k))), beta


@pytest.mark.parametrize(("n", "d"), [s for s in SHAPES if s[0] >= 3])
def test_bulyan_columns_are_bit_identical_to_the_numpy_window_search(n: int, d: int, sort_form: bool) -> None:
    X = awkward(n, d, seed=n * 1000 + d + 2)
    X[::3] *= np.float32(1e3)  # spread, so that windows at both ends win somewhere
    selected = np.sort(np.random.default_rng(n).choice(n, size=n - 2 if n > 3 else n, replace=False))
    for beta in {1, max(1, selected.size // 2), selected.size}:
        expected = reduce_sorted_columns(X[selected], lambda rows, b=beta: closest_to_median_mean(rows, b))
        assert np.array_equal(bits(closest_to_median_columns(X, selected, beta)), bits(expected)), beta


def test_the_numpy_path_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    X = awkward(11, 3 * LANES + 5, seed=7)
    fast = (median(X), trimmed_mean(X, 0.2), closest_to_median_columns(X, np.arange(1, 10), 5))
    monkeypatch.setattr(compiled, "kernels", lambda: None)
    slow = (median(X), trimmed_mean(X, 0.2), closest_to_median_columns(X, np.arange(1, 10), 5))
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(bits(a), bits(b))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", [0, LANES - 1, 2 * LANES + 3])
def test_non_finite_updates_are_refused_naming_the_clients(bad: float, column: int) -> None:
    X = awkward(9, 2 * LANES + 4, seed=3)
    X[4, column] = bad
    X[7, 1] = bad
    with pytest.raises(InvalidUpdates, match=r"clients \[4, 7\] contain NaN or Inf"):
        median(X)
    with pytest.raises(InvalidUpdates, match=r"clients \[4, 7\] contain NaN or Inf"):
        trimmed_mean(X, 0.2)


def test_a_trimmed_sum_beyond_float32_is_refused_not_returned_as_inf() -> None:
    X = np.full((10, LANES + 3), 3e38, dtype=np.float32)
    with pytest.raises(InvalidUpdates, match="overflows float32"):
        trimmed_mean(X, 0.1)


def test_more_clients_than_the_network_takes_use_the_numpy_sort() -> None:
    X = awkward(300, 50, seed=5)
    assert compiled.network_reduce(X, compiled.MEDIAN, needed=(149, 150)) is None
    assert np.array_equal(median(X), np.median(X, axis=0))


@pytest.mark.parametrize("n", [3, 4, 10, 17, 32, 50, 100, 101, 256])
def test_a_network_pruned_as_a_set_leaves_the_middle_values_in_the_middle(n: int) -> None:
    from aggregator.strategies.sorting_network import pruned_comparators, sorted_rows

    for k in sorted({1, n // 10, n // 5, (n - 1) // 2} - {0}):
        middle = tuple(range(k, n - k))
        block = awkward(n, 300, seed=n + k)
        expected = np.sort(block, axis=0)[k : n - k]
        got = np.stack(sorted_rows(block.copy(), middle, as_set=True))[k : n - k]
        # The same values in the middle positions (as a set per column), -0.0 and +0.0 alike.
        assert np.array_equal(np.sort(got, axis=0), expected)
        assert len(pruned_comparators(n, middle, as_set=True)) <= len(pruned_comparators(n, middle))
    assert len(pruned_comparators(100, tuple(range(20, 80)), as_set=True)) == 931
