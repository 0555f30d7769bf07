"""FLTrust, centered clipping, bucketing and server momentum: definitions, contracts, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregator.errors import InvalidParameter, InvalidUpdates
from aggregator.strategies.centered_clip import (
    bucket_means,
    bucketed_centered_clip,
    centered_clip,
    server_momentum,
)
from aggregator.strategies.fltrust import cosine_to_reference, fltrust, fltrust_coefficients, trust_scores

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def matrices(min_n: int = 1, max_n: int = 12, max_d: int = 20) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(st.integers(min_n, max_n), st.integers(1, max_d)).flatmap(
        lambda s: arrays(np.float32, s, elements=finite)
    )


def fltrust_by_definition(X: np.ndarray, g0: np.ndarray) -> np.ndarray:
    """The paper's Algorithm 2, one client at a time, in float64."""
    X, g0 = X.astype(np.float64), g0.astype(np.float64)
    total, acc = 0.0, np.zeros_like(g0)
    for x in X:
        nx = np.linalg.norm(x)
        ts = max(0.0, float(x @ g0) / (nx * np.linalg.norm(g0))) if nx > 0 else 0.0
        if ts > 0:
            acc += ts * (np.linalg.norm(g0) / nx) * x
        total += ts
    return acc / total if total > 0 else acc


def test_fltrust_matches_the_papers_algorithm() -> None:
    rng = np.random.default_rng(0)
    for n, d in [(3, 5), (10, 650), (30, 2000)]:
        X = rng.standard_normal((n, d)).astype(np.float32)
        g0 = rng.standard_normal(d).astype(np.float32) + X.mean(axis=0)
        np.testing.assert_allclose(fltrust(X, g0), fltrust_by_definition(X, g0), rtol=1e-4, atol=1e-6)


def test_update_against_the_reference_gets_no_weight_and_scale_is_removed() -> None:
    g0 = np.array([1.0, 0.0, 0.0], np.float32)
    X = np.array([[2.0, 2.0, 0.0], [-1e6, 0.0, 0.0], [0.0, 0.0, 5.0]], np.float32)
    np.testing.assert_allclose(trust_scores(X, g0), [np.sqrt(0.5), 0.0, 0.0], rtol=1e-6)
    # Only the first row counts, rescaled to the reference's norm 1.
    np.testing.assert_allclose(fltrust(X, g0), [np.sqrt(0.5), np.sqrt(0.5), 0.0], rtol=1e-6)


def test_no_trusted_update_leaves_the_model_unchanged() -> None:
    g0 = np.ones(4, np.float32)
    X = -np.abs(np.random.default_rng(1).standard_normal((5, 4))).astype(np.float32)
    np.testing.assert_array_equal(fltrust(X, g0), np.zeros(4, np.float32))
    assert not fltrust_coefficients(X, g0).any()


def test_zero_rows_have_zero_cosine() -> None:
    X = np.zeros((2, 3), np.float32)
    assert cosine_to_reference(X, np.ones(3, np.float32)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "reference, match",
    [
        (np.zeros(3, np.float32), "reference update is zero"),
        (np.ones(4, np.float32), "shape"),
        (np.array([1.0, np.nan, 0.0], np.float32), "finite"),
        (np.array([1, 2, 3]), "floating"),
    ],
)
def test_invalid_reference_is_refused(reference: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        fltrust(np.ones((2, 3), np.float32), reference)


def test_non_finite_update_is_refused() -> None:
    X = np.ones((2, 3), np.float32)
    X[1, 1] = np.inf
    with pytest.raises(InvalidUpdates):
        fltrust(X, np.ones(3, np.float32))


@settings(max_examples=60, deadline=None)
@given(matrices(), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
def test_fltrust_norm_bounded_and_invariant_to_client_scale(X: np.ndarray, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    g0 = (rng.standard_normal(X.shape[1]) + 0.1).astype(np.float32)
    agg = fltrust(X, g0)
    assert np.linalg.norm(agg) <= np.linalg.norm(g0) * (1 + 1e-4) + 1e-6
    # A client rescaling its own update changes nothing (its weight depends on direction only).
    scaled = X.copy()
    scaled[0] *= np.float32(scale)
    # Subnormal entries lose digits when scaled (1e-45 x 0.5 is 0): that changes the direction itself.
    tiny = np.finfo(np.float32).tiny
    assume(all(((row == 0) | (np.abs(row) >= tiny)).all() for row in (X[0], scaled[0])))
    np.testing.assert_allclose(fltrust(scaled, g0), agg, rtol=1e-3, atol=1e-4 * np.linalg.norm(g0))


@settings(max_examples=40, deadline=None)
@given(matrices(min_n=2), st.integers(0, 2**32 - 1))
def test_fltrust_is_permutation_invariant(X: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    g0 = (rng.standard_normal(X.shape[1]) + 0.1).astype(np.float32)
    perm = rng.permutation(X.shape[0])
    np.testing.assert_allclose(fltrust(X[perm], g0), fltrust(X, g0), rtol=1e-4, atol=1e-4)


# --- centered clipping ---------------------------------------------------------------------------


def centered_clip_by_definition(X: np.ndarray, v: np.ndarray, tau: float, iterations: int) -> np.ndarray:
    X, v = X.astype(np.float64), v.astype(np.float64)
    for _ in range(iterations):
        dist = [np.linalg.norm(x - v) for x in X]
        radius = float(np.median(dist)) if tau == 0 else tau
        v = v + sum(
            (x - v) * min(1.0, radius / d) if d > 0 else 0 * x for x, d in zip(X, dist, strict=True)
        ) / len(X)
    return v


@pytest.mark.parametrize("tau", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("iterations", [1, 3])
def test_centered_clip_matches_its_definition(tau: float, iterations: int) -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((11, 40)).astype(np.float32)
    X[:3] += 50.0
    v0 = rng.standard_normal(40).astype(np.float32)
    np.testing.assert_allclose(
        centered_clip(X, v0, tau, iterations),
        centered_clip_by_definition(X, v0, tau, iterations),
        rtol=1e-4,
        atol=1e-4,
    )


def test_large_tau_is_the_mean_after_one_iteration() -> None:
    X = np.random.default_rng(2).standard_normal((9, 30)).astype(np.float32)
    np.testing.assert_allclose(centered_clip(X, np.zeros(30, np.float32), 1e9, 1), X.mean(axis=0), rtol=1e-5)


def test_far_attackers_move_the_centre_by_at_most_tau_per_iteration() -> None:
    rng = np.random.default_rng(3)
    honest = rng.normal(0.0, 0.1, (7, 50)).astype(np.float32) + 1.0
    attackers = np.full((3, 50), 1e30, np.float32)
    X = np.vstack([honest, attackers])
    start = honest.mean(axis=0)
    out = centered_clip(X, start, tau=0.0, iterations=3)
    assert np.isfinite(out).all()
    # Each attacker pulls by at most the radius (the median distance, an honest one) / n per iteration.
    radius = np.median(np.linalg.norm(X - start, axis=1)[:7]) * 2
    assert np.linalg.norm(out - start) < 3 * 3 * radius / 10 + 1e-3


def test_none_centre_starts_at_the_coordinate_median() -> None:
    X = np.random.default_rng(4).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_allclose(
        centered_clip(X, None, 2.0, 2), centered_clip(X, np.median(X, axis=0), 2.0, 2), rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": -1.0}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 1.5}, "iterations"),
        ({"center": np.zeros(3, np.float32)}, "centre"),
    ],
)
def test_centered_clip_refuses_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        centered_clip(np.ones((3, 4), np.float32), **kwargs)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(matrices(), st.floats(0.0, 100.0), st.integers(1, 4))
def test_centered_clip_stays_in_the_bounding_box(X: np.ndarray, tau: float, iterations: int) -> None:
    # Every step is a convex move towards the rows (weights <= 1/n), starting at the coordinate median.
    out = centered_clip(X, None, tau, iterations)
    lo, hi = X.min(axis=0), X.max(axis=0)
    span = np.maximum(hi - lo, 1.0) * 1e-4
    assert (out >= lo - span).all() and (out <= hi + span).all()


def test_bucket_means_average_a_permutation_in_groups() -> None:
    X = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    means = bucket_means(X, 3, rng_a)
    order = rng_b.permutation(10)
    expected = [X[order[i : i + 3]].mean(axis=0) for i in range(0, 10, 3)]
    np.testing.assert_allclose(means, expected, rtol=1e-6)
    assert means.shape == (4, 3)
    # Bucket means preserve the overall mean when buckets are equal in size.
    np.testing.assert_allclose(bucket_means(X[:9], 3, rng_a).mean(axis=0), X[:9].mean(axis=0), rtol=1e-6)


def test_bucket_size_one_is_a_permutation() -> None:
    X = np.random.default_rng(6).standard_normal((7, 4)).astype(np.float32)
    out = bucket_means(X, 1, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(out, axis=0), np.sort(X, axis=0))


def test_bucketed_centered_clip_is_reproducible_and_refuses_bad_bucket() -> None:
    X = np.random.default_rng(8).standard_normal((10, 20)).astype(np.float32)
    a = bucketed_centered_clip(X, np.random.default_rng(1), bucket_size=2)
    b = bucketed_centered_clip(X, np.random.default_rng(1), bucket_size=2)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidParameter, match="bucket_size"):
        bucketed_centered_clip(X, np.random.default_rng(1), bucket_size=0)


def test_server_momentum_is_fedavgm_buffer() -> None:
    prev = np.array([1.0, -2.0], np.float32)
    agg = np.array([0.5, 0.5], np.float32)
    np.testing.assert_allclose(server_momentum(prev, agg, 0.9), 0.9 * prev + agg, rtol=1e-6)
    np.testing.assert_array_equal(server_momentum(None, agg, 0.9), agg)
    np.testing.assert_array_equal(server_momentum(prev, agg, 0.0), agg)
    with pytest.raises(InvalidParameter, match="momentum"):
        server_momentum(prev, agg, 1.0)
    with pytest.raises(InvalidParameter, match="shape"):
        server_momentum(np.zeros(3, np.float32), agg, 0.5)
