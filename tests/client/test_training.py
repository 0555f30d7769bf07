"""Trainers, deltas, compression and local DP (pure NumPy, no services)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from client.data import load_digits_dataset
from client.errors import TrainingError
from client.training import (
    LocalDP,
    MLPClassifier,
    SoftmaxRegression,
    apply_delta,
    clip_by_global_norm,
    compute_delta,
    dp_epsilon,
    global_norm,
    train_locally,
    trainer_for_spec,
)
from fedledger import models as platform_models
from fedledger.payload import Compression, decode_update, encode_update, topk_count


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_digits_dataset("all", preprocessing="standardize").split(0.2, seed=0)


@pytest.mark.parametrize(
    "trainer",
    [SoftmaxRegression(64, 10, epochs=10), MLPClassifier(64, 10, epochs=10)],
    ids=["softmax", "mlp"],
)
def test_builtin_trainers_learn_digits(digits, trainer) -> None:  # type: ignore[no-untyped-def]
    train, test = digits
    start = time.perf_counter()
    weights = train_locally(trainer.init_weights(0), train, trainer, rng=0)
    elapsed = time.perf_counter() - start
    metrics = trainer.evaluate(weights, test)
    assert metrics.accuracy > 0.85, metrics
    assert elapsed < 5.0
    # Same data, same seed: the same weights (training is reproducible).
    again = train_locally(trainer.init_weights(0), train, trainer, rng=0)
    assert all(np.array_equal(weights[k], again[k]) for k in weights)
    # The loss means the same thing here as in the server's holdout evaluation.
    loss, accuracy = platform_models.evaluate(weights, test.x, test.y)
    assert loss == pytest.approx(metrics.loss, rel=1e-4) and accuracy == pytest.approx(metrics.accuracy)


def test_bundled_task_preprocessing_learns_too() -> None:
    data = load_digits_dataset("train")  # pixels in [0, 1], the server's holdout scaling
    holdout = load_digits_dataset("holdout")
    assert float(data.x.max()) <= 1.0 and len(holdout) == 360 and len(data) == 1437
    trainer = SoftmaxRegression(64, 10, epochs=10)
    weights = train_locally(trainer.init_weights(), data, trainer)
    assert trainer.evaluate(weights, holdout).accuracy > 0.85


def test_trainer_for_spec_picks_the_architecture() -> None:
    softmax = trainer_for_spec({"dense.weight": [64, 10], "dense.bias": [10]}, epochs=2, learning_rate=None)
    assert isinstance(softmax, SoftmaxRegression) and softmax.epochs == 2 and softmax.learning_rate == 0.3
    mlp = trainer_for_spec(MLPClassifier(5, 3, hidden=7).spec())
    assert isinstance(mlp, MLPClassifier) and (mlp.n_features, mlp.hidden, mlp.n_classes) == (5, 7, 3)
    with pytest.raises(TrainingError, match="no built-in trainer"):
        trainer_for_spec({"conv.weight": [3, 3, 1, 8]})
    with pytest.raises(TrainingError, match="inconsistent"):
        trainer_for_spec(
            {"hidden.weight": [5, 7], "hidden.bias": [7], "output.weight": [8, 3], "output.bias": [3]}
        )


def test_any_train_function_is_accepted_and_checked(digits) -> None:  # type: ignore[no-untyped-def]
    train, _ = digits
    model = {"w": np.ones((2, 2), np.float32)}
    result = train_locally(model, train, lambda w, data, rng: {"w": w["w"] * 2})
    assert result["w"].dtype == np.float32 and np.all(result["w"] == 2)
    with pytest.raises(TrainingError, match="shape"):
        train_locally(model, train, lambda w, data, rng: {"w": np.ones(3)})
    with pytest.raises(TrainingError, match="missing"):
        train_locally(model, train, lambda w, data, rng: {"v": w["w"]})
    with pytest.raises(TrainingError, match="NaN"):
        train_locally(model, train, lambda w, data, rng: {"w": w["w"] * np.nan})
    with pytest.raises(TrainingError, match="features"):
        SoftmaxRegression(3, 10)(SoftmaxRegression(3, 10).init_weights(), train, np.random.default_rng())


def test_divergence_is_a_training_error(digits) -> None:  # type: ignore[no-untyped-def]
    train, _ = digits
    trainer = MLPClassifier(64, 10, epochs=3, learning_rate=1e6, momentum=0.0)
    with pytest.raises(TrainingError, match="diverged|NaN"):
        train_locally(trainer.init_weights(0), train, trainer)


def test_delta_and_compression_round_trip(digits) -> None:  # type: ignore[no-untyped-def]
    train, _ = digits
    trainer = MLPClassifier(64, 10, hidden=16, epochs=1)
    global_weights = trainer.init_weights(1)
    local = train_locally(global_weights, train, trainer, rng=1)
    delta = compute_delta(local, global_weights)
    # dense float32: exact
    decoded = decode_update(encode_update(delta), trainer.spec())
    rebuilt = apply_delta(global_weights, decoded)
    assert all(np.allclose(rebuilt[k], local[k], atol=1e-6) for k in local)
    # float16: within half precision
    half = decode_update(encode_update(delta, Compression(half=True)), trainer.spec())
    assert all(np.allclose(half[k], delta[k], rtol=1e-3, atol=1e-4) for k in delta)
    # top-k: the k largest entries of every tensor survive, everything else is zero
    sparse = decode_update(encode_update(delta, Compression(topk_fraction=0.1)), trainer.spec())
    for name, value in delta.items():
        k = topk_count(value.size, 0.1)
        kept = np.flatnonzero(sparse[name].reshape(-1))
        assert len(kept) <= k
        threshold = np.sort(np.abs(value.reshape(-1)))[-k]
        assert np.all(np.abs(value.reshape(-1)[kept]) >= threshold)
        assert np.array_equal(sparse[name].reshape(-1)[kept], value.reshape(-1)[kept])
    assert (
        len(encode_update(delta, Compression(topk_fraction=0.1, half=True))) < len(encode_update(delta)) / 3
    )


def test_local_dp_clips_and_adds_calibrated_noise() -> None:
    rng = np.random.default_rng(0)
    delta = {"a": rng.normal(size=(100, 10)).astype(np.float32), "b": rng.normal(size=50).astype(np.float32)}
    norm = global_norm(delta)
    clipped, before = clip_by_global_norm(delta, 1.0)
    assert before == pytest.approx(norm) and global_norm(clipped) == pytest.approx(1.0, rel=1e-5)
    # Direction is kept: every tensor is scaled by the same factor.
    assert np.allclose(clipped["a"] * norm, delta["a"], rtol=1e-4, atol=1e-5)
    small = {k: v / (10 * norm) for k, v in delta.items()}
    unchanged, _ = clip_by_global_norm(small, 1.0)
    assert all(np.array_equal(unchanged[k], small[k]) for k in small)

    private, report = LocalDP(clip_norm=0.5, noise_multiplier=0.0).privatize(delta, rng)
    assert report.clipped and global_norm(private) == pytest.approx(0.5, rel=1e-5) and report.noise_std == 0
    zero = {"a": np.zeros((200, 100), np.float32)}
    noisy, report = LocalDP(clip_norm=2.0, noise_multiplier=1.5).privatize(zero, np.random.default_rng(1))
    assert report.noise_std == pytest.approx(3.0) and not report.clipped
    assert float(np.std(noisy["a"])) == pytest.approx(3.0, rel=0.03) and noisy["a"].dtype == np.float32
    assert dp_epsilon(2.0, 10) < dp_epsilon(1.0, 10) < dp_epsilon(1.0, 100)
    assert dp_epsilon(0.0, 1) == float("inf")
    with pytest.raises(TrainingError):
        LocalDP(clip_norm=0)
