"""The built-in models' per-example losses: what the scores' standard errors are computed from."""

from __future__ import annotations

import numpy as np

from fedledger.models import evaluate, example_losses, init_mlp, init_softmax


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
