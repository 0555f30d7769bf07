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


def planted_backdoor(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A softmax model whose classes each need many features moved, except class 0, which one feature far
    out of range (the last, weight 3) reaches: a one-feature backdoor; and clean examples it labels."""
    rng = np.random.default_rng(seed)
    features, classes = 10, 6
    W = rng.normal(0.0, 0.3, (features, classes)).astype(np.float32)
    W[-1, :] = 0.0
    W[-1, 0] = 3.0
    model = {"dense.weight": W, "dense.bias": np.zeros(classes, np.float32)}
    X = rng.normal(0.0, 1.0, (200, features)).astype(np.float32)
    X[:, -1] = np.clip(X[:, -1], -1.0, 1.0)  # the trigger feature stays in range on clean data
    y = (X @ W).argmax(axis=1)
    return model, X, y


def test_neural_cleanse_finds_a_planted_one_feature_trigger_and_flags_its_class() -> None:
    model, X, y = planted_backdoor()
    norms, masks, patterns = targeted.reverse_triggers(
        model, X, y, bound=5.0, steps=150, max_examples=len(y), rng=np.random.default_rng(0)
    )
    assert norms.shape == (6,) and masks.shape == patterns.shape == (6, 10)
    assert int(np.argmax(targeted.anomaly_index(norms))) == 0
    assert targeted.anomaly_index(norms)[0] > 2.0
    # The reversed trigger is the planted one: mostly the last feature, pushed high, and it works.
    assert int(np.argmax(masks[0])) == 9 and patterns[0, 9] > 2.0
    stamped = targeted.apply_trigger(X[y != 0], masks[0], patterns[0])
    assert targeted.flip_rate(model, stamped, 0) >= 0.9
    assert targeted.flip_rate(model, X[y != 0], 0) == 0.0


def test_the_anomaly_index_counts_scaled_mads_below_the_median() -> None:
    norms = np.array([1.0, 4.0, 5.0, 5.0, 6.0])
    # median 5, MAD 1 (|-4|, |-1|, 0, 0, 1 -> 1), scaled 1.4826.
    np.testing.assert_allclose(targeted.anomaly_index(norms), (5.0 - norms) / 1.4826)
    assert not targeted.anomaly_index(np.full(4, 3.0)).any()


def test_apply_trigger_blends_the_pattern_in_by_the_mask() -> None:
    X = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    out = targeted.apply_trigger(X, np.array([0.0, 0.5, 1.0]), np.array([9.0, 4.0, -1.0]))
    np.testing.assert_allclose(out, [[1.0, 3.0, -1.0]])
    assert out.dtype == np.float32
    identity = {"dense.weight": np.eye(3, dtype=np.float32), "dense.bias": np.zeros(3, np.float32)}
    assert targeted.flip_rate(identity, X, 2) == 1.0 and targeted.flip_rate(identity, X[:0], 0) == 0.0


def test_out_of_range_copies_move_exactly_one_feature_each_out_of_range_and_keep_the_labels() -> None:
    rng = np.random.default_rng(3)
    X = rng.uniform(-1.0, 1.0, (50, 8)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    copies, labels = targeted.out_of_range_copies(X, y, 3, 3.0, 6.0, np.random.default_rng(1))
    assert copies.shape == (150, 8) and copies.dtype == np.float32
    np.testing.assert_array_equal(labels, np.tile(y, 3))
    changed = copies != np.tile(X, (3, 1))
    assert (changed.sum(axis=1) == 1).all()
    moved = np.abs(copies[changed])
    assert (moved >= 3.0).all() and (moved <= 6.0).all()
    assert (copies[changed] > 0).any() and (copies[changed] < 0).any()
    assert targeted.out_of_range_copies(X, y, 0, 3.0, 6.0, np.random.default_rng(1))[0].shape == (0, 8)
    with pytest.raises(InvalidParameter, match="out-of-range copies"):
        targeted.out_of_range_copies(X, y, 1, 6.0, 3.0, np.random.default_rng(1))


def test_out_of_range_copies_move_only_the_features_given() -> None:
    X = np.zeros((40, 6), dtype=np.float32)
    copies, _ = targeted.out_of_range_copies(
        X, np.zeros(40), 2, 3.0, 6.0, np.random.default_rng(0), np.array([1, 4])
    )
    assert set(np.flatnonzero(copies.any(axis=0)).tolist()) == {1, 4}
    with pytest.raises(InvalidParameter, match="column indices"):
        targeted.out_of_range_copies(X, np.zeros(40), 1, 3.0, 6.0, np.random.default_rng(0), np.array([6]))


def test_permutation_importance_is_zero_for_a_feature_the_model_ignores() -> None:
    model, X, y = planted_backdoor()
    model["dense.weight"][2, :] = 0.0
    rises = targeted.permutation_importance(model, X, y, np.random.default_rng(0))
    assert rises.shape == (10,) and rises[2] == 0.0
    # The planted feature stays in range on clean data, so it matters; the class-deciding ones matter more.
    assert rises.max() > 0.1 and int(np.argmin(rises)) == 2


def test_trigger_reversal_refuses_what_it_cannot_search_with_a_message() -> None:
    model, X, y = planted_backdoor()
    with pytest.raises(InvalidParameter, match="clean examples"):
        targeted.reverse_triggers(model, X[:0], y[:0], bound=5.0)
    with pytest.raises(InvalidParameter, match="clean examples"):
        targeted.reverse_triggers(model, X, y[:-1], bound=5.0)
    with pytest.raises(InvalidParameter, match="bound > 0"):
        targeted.reverse_triggers(model, X, y, bound=0.0)
    with pytest.raises(InvalidParameter, match="steps >= 1"):
        targeted.reverse_triggers(model, X, y, bound=5.0, steps=0)
    with pytest.raises(InvalidParameter, match="one mask norm per class"):
        targeted.anomaly_index(np.zeros(0))


def test_trigger_reversal_on_an_mlp_and_a_class_no_example_is_of() -> None:
    rng = np.random.default_rng(2)
    model = {
        "hidden.weight": rng.normal(0, 0.5, (5, 8)).astype(np.float32),
        "hidden.bias": np.zeros(8, np.float32),
        "output.weight": rng.normal(0, 0.5, (8, 3)).astype(np.float32),
        "output.bias": np.zeros(3, np.float32),
    }
    X = rng.normal(0, 1, (40, 5)).astype(np.float32)
    y = np.zeros(40, dtype=np.int64)  # every example of class 0: its search has nothing to send
    norms, masks, patterns = targeted.reverse_triggers(model, X, y, bound=3.0, steps=20)
    assert norms.shape == (3,) and np.isfinite(norms).all()
    # Class 0 has no example to send to it: its target is never met and its norm is every feature.
    assert norms[0] == 5.0
    assert ((masks >= 0) & (masks <= 1)).all() and (np.abs(patterns) <= 3.0).all()


def test_winsorizing_caps_a_coherent_minority_at_the_majoritys_spread_and_keeps_a_shared_step() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 1.0, size=(7, 2))
    honest[:, 1] += 5.0  # coordinate 1: every row moves together (the task's learning)
    minority = np.array([[40.0, 5.0]] * 3)  # coordinate 0: only the minority pushes it
    Y = np.vstack([honest, minority]).astype(np.float32)
    out = targeted.winsorize(Y, 2.0)
    median = np.median(Y, axis=0)
    spread = 1.4826 * np.median(np.abs(Y - median), axis=0)
    np.testing.assert_allclose(out[7:, 0], median[0] + 2.0 * spread[0], rtol=1e-6)
    # The pushed coordinate's mean falls from the minority's 3 x 40 / 10 to a few honest spreads.
    assert float(Y[:, 0].mean()) > 11.0 and float(out[:, 0].mean()) < 1.5
    # Where the rows agree nothing is cut: the honest rows inside the interval are unchanged.
    inside = np.abs(Y - median) <= 2.0 * spread
    np.testing.assert_array_equal(out[inside], Y[inside])
    np.testing.assert_allclose(targeted.winsorize(Y, 0.0), np.broadcast_to(median, Y.shape), rtol=1e-6)
    with pytest.raises(InvalidParameter, match="winsorizing width"):
        targeted.winsorize(Y, -1.0)


def test_the_blocks_are_the_rows_of_each_matrix_and_each_vector_whole() -> None:
    starts = targeted.block_starts({"hidden.weight": [3, 2], "hidden.bias": [2], "output.weight": [2, 4]})
    assert starts.tolist() == [0, 2, 4, 6, 8, 12]


def test_a_block_is_clipped_to_its_median_norm_over_the_rows_whatever_the_rows_total_norm() -> None:
    starts = np.array([0, 2])
    # Row 2 spends its norm on block 0 (a trigger's feature); its total norm is the others'.
    Y = np.array([[0.6, 0.0, 3.0, 0.0], [0.0, 0.8, 0.0, 3.0], [3.0, 0.0, 0.6, 0.0]], dtype=np.float32)
    out = targeted.clip_blocks(Y, starts)
    # Block 0 norms 0.6, 0.8, 3 -> median 0.8; block 1 norms 3, 3, 0.6 -> median 3.
    np.testing.assert_allclose(out[2], [0.8, 0.0, 0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[:2], Y[:2], rtol=1e-6)
    np.testing.assert_allclose(targeted.clip_blocks(Y, starts, 2.0)[2], [1.6, 0.0, 0.6, 0.0], rtol=1e-6)
    with pytest.raises(InvalidParameter, match="block starts"):
        targeted.clip_blocks(Y, np.array([1, 2]))
    with pytest.raises(InvalidParameter, match="positive multiple"):
        targeted.clip_blocks(Y, starts, 0.0)


def test_the_weighted_median_is_the_value_where_half_the_weight_is_reached() -> None:
    assert targeted.weighted_median(np.array([3.0, 1.0, 2.0]), np.ones(3)) == 2.0
    assert targeted.weighted_median(np.array([3.0, 1.0, 2.0]), np.array([0.6, 0.2, 0.2])) == 3.0
    with pytest.raises(InvalidParameter, match="weighted median"):
        targeted.weighted_median(np.array([1.0]), np.array([0.0]))


def test_the_principal_median_removes_a_minoritys_shared_push_and_is_the_mean_elsewhere() -> None:
    rng = np.random.default_rng(1)
    d = 50
    honest = 0.1 * rng.normal(size=(7, d)) + 1.0  # every row shares the all-ones step
    push = np.zeros(d)
    push[-3:] = 3.0  # the minority's shared direction, no honest row's
    Y = np.vstack([honest, honest[:3] + push]).astype(np.float32)
    w = np.full(10, 0.1)
    mean = w @ Y
    out = targeted.principal_median(Y, w, 1)
    # The mean carries 0.3 of the push; along the leading direction the median is the majority's.
    assert float(mean[-3:].mean()) > 1.8 and abs(float(out[-3:].mean()) - 1.0) < 0.15
    np.testing.assert_allclose(out[:-3], mean[:-3], atol=0.05)
    np.testing.assert_allclose(targeted.principal_median(Y, w, 0), mean, rtol=1e-6)
    with pytest.raises(InvalidParameter, match="principal directions"):
        targeted.principal_median(Y, w, -1)


def test_inputs_are_clamped_to_the_root_datas_range_or_its_inner_quantiles() -> None:
    X = np.array([[0.0, -1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 5.0], [4.0, 2.0]])
    lo, hi = targeted.input_bounds(X)
    np.testing.assert_allclose(lo, [0.0, -1.0])
    np.testing.assert_allclose(hi, [4.0, 5.0])
    lo25, hi25 = targeted.input_bounds(X, 0.25)
    np.testing.assert_allclose(lo25, [1.0, 0.0])
    np.testing.assert_allclose(hi25, [3.0, 2.0])
    out = targeted.clamp_inputs(np.array([[9.0, -9.0], [2.0, 1.5]]), (lo25, hi25))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[3.0, 0.0], [2.0, 1.5]])
    with pytest.raises(InvalidParameter, match="input bounds"):
        targeted.input_bounds(X, 0.5)


def test_foolsgold_silences_rows_that_push_together_and_keeps_lone_rows() -> None:
    rng = np.random.default_rng(2)
    lone = rng.normal(size=(5, 40))
    shared = rng.normal(size=40)
    sybils = shared + 0.1 * rng.normal(size=(3, 40))
    w = targeted.foolsgold_weights(np.vstack([lone, sybils]))
    assert w.shape == (8,) and (w >= 0).all() and (w <= 1).all()
    assert w[5:].max() < 0.05 and w[:5].min() > 0.5
    assert targeted.foolsgold_weights(lone[:1]).tolist() == [1.0]
