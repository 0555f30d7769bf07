"""aggregator.strategies.targeted: FLAME's filter and noise, and the robust learning rate, on their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.strategies import targeted


def test_cosine_distances_are_one_minus_the_cosine_with_a_zero_diagonal() -> None:
    X = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    D = targeted.cosine_distances(X)
    expected = np.array([[0, 1, 2, 1], [1, 0, 1, 1], [2, 1, 0, 1], [1, 1, 1, 0]], dtype=np.float64)
    np.testing.assert_allclose(D, expected, atol=1e-12)


def test_the_majority_cluster_leaves_out_a_coherent_minority_pointing_elsewhere() -> None:
    rng = np.random.default_rng(0)
    honest = np.array([1.0, 1.0, 0.0, 0.0]) + 0.1 * rng.normal(size=(7, 4))
    minority = np.array([0.0, 0.0, 1.0, -1.0]) + 0.01 * rng.normal(size=(3, 4))
    keep = targeted.majority_cluster(np.vstack([honest, minority]).astype(np.float32))
    # The minority is out; HDBSCAN may also leave out the honest row farthest from the rest (FLAME's
    # false positives on heterogeneous data), never enough of them to lose the majority.
    assert not keep[7:].any() and keep[:7].sum() >= 6


def test_the_majority_cluster_keeps_every_row_when_there_are_too_few_to_cluster() -> None:
    assert targeted.majority_cluster(np.eye(2, dtype=np.float32)).tolist() == [True, True]


def test_keep_only_renormalises_the_kept_weights_and_keeps_each_clip_scale() -> None:
    norms = np.array([1.0, 4.0, 2.0])
    clip = 2.0
    scale = np.minimum(1.0, clip / norms)  # 1, 0.5, 1
    weight = np.array([0.5, 0.25, 0.25])
    c = scale * weight
    out = targeted.keep_only(c, np.array([True, True, False]), norms, clip)
    np.testing.assert_allclose(out, scale * np.array([0.5, 0.25, 0.0]) / 0.75)
    assert not targeted.keep_only(c, np.zeros(3, dtype=bool), norms, clip).any()


def test_the_robust_learning_rate_reverses_or_drops_coordinates_without_enough_agreement() -> None:
    X = np.array([[1, 1, -1], [1, -1, -1], [1, 1, -1], [1, -1, 1]], dtype=np.float32)
    # Agreement per coordinate: 4, 0, 2 of 4 rows.
    np.testing.assert_array_equal(targeted.sign_agreement(X), [4, 0, 2])
    aggregate = np.array([0.5, 0.1, -0.2], dtype=np.float32)
    np.testing.assert_allclose(targeted.robust_learning_rate(aggregate, X, 0.5), [0.5, -0.1, -0.2])
    np.testing.assert_allclose(targeted.robust_learning_rate(aggregate, X, 0.75), [0.5, -0.1, 0.2])
    np.testing.assert_allclose(targeted.robust_learning_rate(aggregate, X, 0.75, reverse=False), [0.5, 0, 0])
    with pytest.raises(InvalidParameter, match="agreement fraction"):
        targeted.robust_learning_rate(aggregate, X, 0.0)


def test_the_noise_is_the_level_times_the_clip_norm() -> None:
    noisy = targeted.add_noise(np.zeros(200_000, dtype=np.float32), 3.0, 0.01, np.random.default_rng(1))
    assert noisy.dtype == np.float32 and float(noisy.std()) == pytest.approx(0.03, rel=0.01)
    with pytest.raises(InvalidParameter, match="noise level"):
        targeted.add_noise(np.zeros(3, dtype=np.float32), 1.0, -0.1, np.random.default_rng(1))
