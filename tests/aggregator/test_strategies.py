"""Every strategy against hand-computed cases, and every precondition as a typed error."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidParameter, InvalidUpdates, TooFewClients, UnknownStrategy
from aggregator.strategies.functions import (
    aggregate,
    bulyan,
    client_weights,
    fedavg,
    hybrid_weights,
    krum,
    median,
    multi_krum,
    pairwise_sq_distances,
    reputation_influence,
    reputation_weighted_mean,
    select_bulyan,
    select_krum,
    trim_count,
    trimmed_mean,
)
from aggregator.strategies.sorting_network import batcher_comparators


def col(*values: float) -> np.ndarray:
    """One parameter, one value per client."""
    return np.array(values, dtype=np.float32)[:, None]


def test_fedavg_weights_by_the_given_weights() -> None:
    X = np.array([[0.0, 10.0], [4.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(fedavg(X, [3, 1]), [1.0, 8.0])
    np.testing.assert_allclose(fedavg(X), [2.0, 6.0])
    np.testing.assert_allclose(fedavg(X, [300, 100]), fedavg(X, [3, 1]))


def test_weighting_rules() -> None:
    np.testing.assert_allclose(client_weights("samples", [100, 300]), [0.25, 0.75])
    np.testing.assert_allclose(client_weights("fitness", [100, 300], [80, 20]), [0.8, 0.2])
    # 0.7 * samples + 0.3 * fitness
    np.testing.assert_allclose(
        hybrid_weights([100, 300], [80, 20]), [0.7 * 0.25 + 0.3 * 0.8, 0.7 * 0.75 + 0.3 * 0.2]
    )
    with pytest.raises(InvalidParameter, match="needs the clients' fitness"):
        client_weights("hybrid", [1, 2])
    with pytest.raises(InvalidParameter, match="unknown weighting 'size'"):
        client_weights("size", [1, 2], [1, 2])
    with pytest.raises(InvalidParameter, match="sum to zero"):
        client_weights("samples", [0, 0])


def test_median_odd_and_even() -> None:
    X = np.array([[1, 5], [3, 2], [2, 100]], dtype=np.float32)
    np.testing.assert_array_equal(median(X), [2, 5])
    np.testing.assert_array_equal(median(col(1, 2, 3, 10)), [2.5])
    np.testing.assert_array_equal(median(col(7)), [7])


def test_trimmed_mean_floors_the_trim_count() -> None:
    assert trim_count(10, 0.2) == 2
    assert trim_count(9, 0.2) == 1  # 1.8 -> 1: never trims more than asked
    assert trim_count(5, 0.2) == 1  # 0.2 * 5 = 1.0000000000000002 in floats must still be 1
    np.testing.assert_allclose(trimmed_mean(col(1, 2, 3, 100), 0.25), [2.5])
    np.testing.assert_allclose(trimmed_mean(col(1, 2, 3, 100), 0.0), [26.5])
    np.testing.assert_allclose(trimmed_mean(col(-1000, 1, 2, 3, 1000), 0.2), [2.0])


def test_krum_and_multi_krum_pick_the_dense_cluster() -> None:
    X = col(0, 1, 2, 100, 101)
    D = pairwise_sq_distances(X)
    np.testing.assert_allclose(D[0], [0, 1, 4, 10000, 10201])
    # scores with n - f - 2 = 2 closest: 5, 2, 5, 9605, 9802
    assert select_krum(D, 1) == 1
    np.testing.assert_array_equal(krum(X, 1), [1.0])
    np.testing.assert_allclose(multi_krum(X, 1, 3), [1.0])
    # m = 0 (the chain's default) means n - f = 4 clients: 0, 1, 2 and the better outlier 100.
    np.testing.assert_allclose(multi_krum(X, 1, 0), [25.75])


def test_bulyan_excludes_outliers_then_averages_around_the_median() -> None:
    X = col(0, 1, 2, 3, 4, 1000, -1000)
    assert sorted(select_bulyan(pairwise_sq_distances(X), 1).tolist()) == [0, 1, 2, 3, 4]
    # theta = 5 selected, beta = 3 closest to their median 2: (1 + 2 + 3) / 3
    np.testing.assert_allclose(bulyan(X, 1), [2.0])


def test_reputation_weighting_cubes_and_caps() -> None:
    np.testing.assert_allclose(reputation_influence([100, 50, 0]), [0.8, 0.125, 0.0])
    X = col(1, 9, 1000)
    np.testing.assert_allclose(
        reputation_weighted_mean(X, [100, 50, 0]), [(0.8 * 1 + 0.125 * 9) / 0.925], rtol=1e-6
    )
    with pytest.raises(InvalidParameter, match="zero reputation"):
        reputation_weighted_mean(X, [0, 0, 0])
    with pytest.raises(InvalidParameter, match=r"in \[0, 100\]"):
        reputation_influence([101])


@pytest.mark.parametrize(
    "strategy, n, f, message",
    [
        (krum, 4, 1, r"krum needs n >= 2f\+3 = 5 for f=1, got n=4; with n=4 the largest valid f is 0"),
        (
            bulyan,
            10,
            2,
            r"bulyan needs n >= 4f\+3 = 11 for f=2, got n=10; with n=10 the largest valid f is 1",
        ),
        (bulyan, 2, 0, r"n=2 is below 3"),
    ],
)
def test_byzantine_bounds_are_refused_not_clamped(strategy, n: int, f: int, message: str) -> None:
    with pytest.raises(TooFewClients, match=message):
        strategy(np.zeros((n, 3), np.float32), f)


def test_invalid_parameters() -> None:
    X = np.zeros((7, 3), np.float32)
    with pytest.raises(InvalidParameter, match=r"m must be in \[1, n - f\] = \[1, 6\]"):
        multi_krum(X, 1, 7)
    with pytest.raises(InvalidParameter, match="non-negative integer"):
        krum(X, -1)
    with pytest.raises(InvalidParameter, match="non-negative integer"):
        krum(X, 1.5)  # type: ignore[arg-type]
    for beta in (0.5, -0.1, float("nan")):
        with pytest.raises(InvalidParameter, match="beta"):
            trimmed_mean(X, beta)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros(5, np.float32), "2-D"),
        (np.zeros((0, 5), np.float32), "at least one client"),
        (np.zeros((3, 0), np.float32), "at least one client"),
        (np.zeros((3, 2), np.int64), "floating point"),
        (np.array([[1.0, np.nan], [1.0, 2.0]], np.float32), r"clients \[0\] contain NaN or Inf"),
        (np.array([[1.0, 2.0], [np.inf, 2.0]], np.float32), r"clients \[1\] contain NaN or Inf"),
    ],
)
def test_bad_update_matrices_are_refused_by_every_strategy(X: np.ndarray, message: str) -> None:
    for call in (lambda: fedavg(X), lambda: median(X), lambda: trimmed_mean(X, 0.1), lambda: krum(X, 0)):
        with pytest.raises(InvalidUpdates, match=message):
            call()


def test_float32_overflow_of_a_finite_matrix_is_not_mistaken_for_nan() -> None:
    X = np.full((3, 4), 3e38, dtype=np.float32)
    np.testing.assert_array_equal(median(X), np.full(4, 3e38, np.float32))


def test_selection_by_name_uses_the_chain_names() -> None:
    X = col(0, 1, 2, 100, 101)
    np.testing.assert_array_equal(aggregate("krum", X, f=1), [1.0])
    np.testing.assert_allclose(aggregate("trimmed_mean", X, beta=0.2), [(1 + 2 + 100) / 3])
    with pytest.raises(
        UnknownStrategy, match="valid: fedavg, trimmed_mean, median, krum, multi_krum, bulyan, reputation"
    ):
        aggregate("geomed", X)
    with pytest.raises(InvalidParameter, match="krum: give either a fixed f or a byzantine fraction"):
        aggregate("krum", X)
    with pytest.raises(InvalidParameter, match="unexpected keyword argument 'beta'"):
        aggregate("median", X, beta=0.1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10, 17, 33, 64, 100])
def test_batcher_network_sorts_every_zero_one_input(n: int) -> None:
    # 0-1 principle: a comparator network sorts all inputs iff it sorts all 0/1 inputs; sample them.
    rng = np.random.default_rng(n)
    inputs = rng.integers(0, 2, size=(n, 4096)).astype(np.float32)
    rows = list(inputs.copy())
    spare = np.empty(4096, np.float32)
    for a, b in batcher_comparators(n):
        np.minimum(rows[a], rows[b], out=spare)
        np.maximum(rows[a], rows[b], out=rows[b])
        rows[a], spare = spare, rows[a]
    np.testing.assert_array_equal(np.stack(rows), np.sort(inputs, axis=0))


def test_many_clients_fall_back_to_a_column_sort() -> None:
    X = np.random.default_rng(3).standard_normal((300, 257)).astype(np.float32)
    np.testing.assert_array_equal(median(X), np.median(X, axis=0))
    from scipy.stats import trim_mean

    np.testing.assert_allclose(trimmed_mean(X, 0.1), trim_mean(X, 0.1, axis=0), rtol=1e-5, atol=1e-6)


def test_huge_finite_attackers_cannot_capture_the_krum_family() -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((10, 1000)).astype(np.float32)
    for attackers in ([0, 1], [7, 8, 9]):
        poisoned = X.copy()
        poisoned[attackers, :1] = 3e38
        honest = [i for i in range(10) if i not in attackers]
        assert np.isfinite(pairwise_sq_distances(poisoned)).sum() >= 90 - 2 * len(attackers) * 9
        chosen = krum(poisoned, 3)
        assert any(np.array_equal(chosen, X[i]) for i in honest)
        assert np.abs(multi_krum(poisoned, 3)).max() < 10
    poisoned = X[:7].copy()
    poisoned[0, :1] = 3e38  # bulyan with n = 7 tolerates f = 1
    assert np.abs(bulyan(poisoned, 1)).max() < 10


def test_coordinate_rules_refuse_a_float32_overflow_instead_of_returning_inf() -> None:
    X = np.full((10, 4), 1e38, dtype=np.float32)
    with pytest.raises(InvalidUpdates, match="overflows float32"):
        trimmed_mean(X, 0.2)
    # numpy scalars are valid parameters (they come out of arrays of governed values).
    np.testing.assert_allclose(trimmed_mean(col(1, 2, 3, 100), np.float32(0.25)), [2.5])
