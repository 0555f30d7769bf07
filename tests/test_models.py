"""The built-in models' per-example losses: what the scores' standard errors are computed from."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.models import (
    UnknownModelFamily,
    ValidationBatch,
    evaluate,
    example_losses,
    init_mlp,
    init_softmax,
)
from fedledger.payload import flatten, unflatten


def test_example_losses_average_to_the_evaluated_loss() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    for weights in (
        {
            k: v + rng.normal(scale=0.3, size=v.shape).astype(np.float32)
            for k, v in init_softmax(6, 3).items()
        },
        init_mlp(6, 8, 3, rng),
    ):
        losses = example_losses(weights, X, y)
        assert losses.shape == (64,) and (losses > 0).all()
        assert np.isclose(losses.mean(), evaluate(weights, X, y)[0], rtol=1e-9)
        # One loss per example, not the mean repeated: the examples differ.
        assert losses.std() > 0


def test_a_diverged_model_has_infinite_loss_on_every_example() -> None:
    weights = init_softmax(4, 2)
    weights["dense.weight"][0, 0] = np.inf
    losses = example_losses(weights, np.ones((5, 4), np.float32), np.zeros(5, dtype=np.int64))
    assert np.isinf(losses).all() and losses.shape == (5,)


def _models(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    softmax = {
        k: v + rng.normal(scale=0.3, size=v.shape).astype(np.float32) for k, v in init_softmax(6, 3).items()
    }
    return [softmax, init_mlp(6, 8, 3, rng)]


def test_a_validation_batch_gives_the_forward_pass_losses_of_any_delta() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    for weights in _models(rng):
        spec = {name: list(t.shape) for name, t in weights.items()}
        batch = ValidationBatch(weights, X, y, spec)
        base = flatten(weights, spec)
        deltas = rng.normal(scale=0.5, size=(3, base.size)).astype(np.float32)
        responses, heads = batch.responses(deltas), batch.heads(deltas)
        assert responses.shape[:2] == (3, 40)
        # No delta: exactly the forward pass of the model itself.
        zero = np.zeros_like(responses[0]), np.zeros_like(heads[0])
        np.testing.assert_array_equal(batch.losses(*zero), example_losses(weights, X, y))
        for k in range(3):
            model = unflatten(base + deltas[k], spec)
            np.testing.assert_allclose(
                batch.losses(responses[k], heads[k]), example_losses(model, X, y), rtol=1e-5
            )
            loss, accuracy = batch.metrics(responses[k], heads[k])
            assert loss == pytest.approx(evaluate(model, X, y)[0], rel=1e-5)
            assert accuracy == evaluate(model, X, y)[1]
        # Linear: a combination of deltas has the same combination of responses.
        a = np.array([0.5, -2.0, 0.25], np.float32)
        mixed = unflatten(base + a @ deltas, spec)
        np.testing.assert_allclose(
            batch.losses(np.tensordot(a, responses, 1), a @ heads), example_losses(mixed, X, y), rtol=1e-5
        )


def test_a_validation_batch_refuses_unknown_layouts_and_marks_divergence() -> None:
    weights = init_softmax(4, 2)
    spec = {name: list(t.shape) for name, t in weights.items()}
    X, y = np.ones((5, 4), np.float32), np.zeros(5, dtype=np.int64)
    batch = ValidationBatch(weights, X, y, spec)
    with pytest.raises(ValueError, match="deltas must be"):
        batch.responses(np.zeros((1, 3), np.float32))
    huge = np.full((1, batch.size), 1e38, np.float32)
    assert np.isinf(batch.losses(batch.responses(huge)[0], batch.heads(huge)[0])).all()
    assert batch.metrics(batch.responses(huge)[0], batch.heads(huge)[0]) == (float("inf"), 0.0)
    with pytest.raises(UnknownModelFamily):
        ValidationBatch({"w": np.zeros(3, np.float32)}, X, y, {"w": [3]})


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_responses_of_wide_layers_and_of_many_feature_blocks_match_the_forward_pass(family: str) -> None:
    rng = np.random.default_rng(2)
    # softmax: 2,100 features are three blocks of the narrow product, the last one partial; mlp: 64 hidden
    # units take the one-product-per-delta path.
    features = 2100 if family == "softmax" else 6
    weights = init_softmax(features, 3) if family == "softmax" else init_mlp(features, 64, 3, rng)
    spec = {name: list(t.shape) for name, t in weights.items()}
    X = rng.normal(size=(25, features)).astype(np.float32)
    y = rng.integers(0, 3, size=25)
    batch = ValidationBatch(weights, X, y, spec)
    base = flatten(weights, spec)
    deltas = rng.normal(scale=0.05, size=(4, base.size)).astype(np.float32)
    responses, heads = batch.responses(deltas), batch.heads(deltas)
    for k in range(4):
        expected = example_losses(unflatten(base + deltas[k], spec), X, y)
        np.testing.assert_allclose(batch.losses(responses[k], heads[k]), expected, rtol=1e-5)
