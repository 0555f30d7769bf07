"""Invariants of the strategies over generated inputs (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aggregator.strategies.functions import bulyan, fedavg, krum, median, multi_krum, trim_count, trimmed_mean

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def updates(draw: st.DrawFn, min_n: int = 1, max_n: int = 24) -> np.ndarray:
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return (np.random.default_rng(seed).standard_normal((n, d)) * scale).astype(np.float32)


@SETTINGS
@given(updates(), st.integers(0, 2**32 - 1))
def test_coordinate_wise_results_do_not_depend_on_client_order(X: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    np.testing.assert_array_equal(median(X[perm]), median(X))
    np.testing.assert_allclose(
        trimmed_mean(X[perm], 0.2), trimmed_mean(X, 0.2), rtol=1e-5, atol=1e-5 * np.abs(X).max()
    )


@SETTINGS
@given(updates(min_n=5), st.integers(0, 2**32 - 1))
def test_krum_family_does_not_depend_on_client_order(X: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    f = (X.shape[0] - 3) // 2
    np.testing.assert_array_equal(krum(X[perm], f), krum(X, f))
    np.testing.assert_allclose(
        multi_krum(X[perm], f), multi_krum(X, f), rtol=1e-5, atol=1e-5 * np.abs(X).max()
    )
    if X.shape[0] >= 7:
        fb = (X.shape[0] - 3) // 4
        np.testing.assert_allclose(bulyan(X[perm], fb), bulyan(X, fb), rtol=1e-5, atol=1e-5 * np.abs(X).max())


@SETTINGS
@given(updates(min_n=1), st.floats(0.0, 0.49))
def test_trimmed_mean_lies_between_min_and_max_and_is_the_mean_at_zero(X: np.ndarray, beta: float) -> None:
    result = trimmed_mean(X, beta)
    tol = 1e-5 * (np.abs(X).max() + 1)
    assert np.all(result >= X.min(axis=0) - tol) and np.all(result <= X.max(axis=0) + tol)
    np.testing.assert_allclose(trimmed_mean(X, 0.0), X.mean(axis=0), rtol=1e-6, atol=tol)


@SETTINGS
@given(updates(min_n=3), st.integers(0, 2**32 - 1), st.sampled_from([1e2, 1e6, -1e6]))
def test_robust_results_stay_within_the_honest_range_when_attackers_are_at_most_f(
    X: np.ndarray, seed: int, attack: float
) -> None:
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    f = int(rng.integers(0, (n - 1) // 2 + 1))  # median tolerates f < n/2
    attackers = rng.choice(n, size=f, replace=False)
    honest = np.setdiff1d(np.arange(n), attackers)
    poisoned = X.copy()
    poisoned[attackers] = attack * (1 + rng.random((f, X.shape[1]))).astype(np.float32)
    lo, hi = X[honest].min(axis=0), X[honest].max(axis=0)
    tol = 1e-5 * (np.abs(X).max() + 1)
    for result in (median(poisoned), trimmed_mean(poisoned, min(0.49, (f + 1e-9) / n))):
        assert np.all(result >= lo - tol) and np.all(result <= hi + tol)


@SETTINGS
@given(updates(min_n=5), st.integers(0, 2**32 - 1))
def test_krum_selects_an_honest_update_against_a_far_attack(X: np.ndarray, seed: int) -> None:
    n = X.shape[0]
    f = (n - 3) // 2
    rng = np.random.default_rng(seed)
    attackers = rng.choice(n, size=f, replace=False)
    poisoned = X.copy()
    poisoned[attackers] = (X[attackers] + 1e4 * (np.abs(X).max() + 1)).astype(np.float32)
    chosen = krum(poisoned, f)
    honest = np.setdiff1d(np.arange(n), attackers)
    assert any(np.array_equal(chosen, X[i]) for i in honest)


@SETTINGS
@given(updates(), st.integers(0, 2**32 - 1))
def test_fedavg_is_invariant_to_weight_scale_and_equals_the_mean_with_equal_weights(
    X: np.ndarray, seed: int
) -> None:
    w = np.random.default_rng(seed).random(X.shape[0]) + 0.01
    tol = 1e-5 * (np.abs(X).max() + 1)
    np.testing.assert_allclose(fedavg(X, w * 1000), fedavg(X, w), rtol=1e-5, atol=tol)
    np.testing.assert_allclose(fedavg(X, np.ones(X.shape[0])), X.mean(axis=0), rtol=1e-5, atol=tol)


@SETTINGS
@given(st.integers(1, 200), st.floats(0.0, 0.4999))
def test_trim_count_never_trims_more_than_asked_or_everything(n: int, beta: float) -> None:
    k = trim_count(n, beta)
    assume(n - 2 * k >= 1)
    assert k <= beta * n + 1e-9
    assert k > beta * n - 1
