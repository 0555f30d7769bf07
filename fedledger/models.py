"""The model families the platform trains out of the box, as named float32 arrays.

This module holds their one forward pass and loss: the server (holdout evaluation, quality scores,
rollback) and the organizations' trainers (``client/training.py``, which adds the backward pass) both call
these functions, so a loss means the same thing on both sides.

- ``softmax``: ``dense.weight`` (features, classes), ``dense.bias`` (classes)
- ``mlp``: ``hidden.weight`` (features, hidden), ``hidden.bias``, ``output.weight`` (hidden, classes),
  ``output.bias``; ReLU hidden layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Weights = Mapping[str, np.ndarray]

SOFTMAX_TENSORS = frozenset({"dense.weight", "dense.bias"})
MLP_TENSORS = frozenset({"hidden.weight", "hidden.bias", "output.weight", "output.bias"})


class UnknownModelFamily(ValueError):
    """The tensors match none of the built-in model families."""


def family_of(weights: Weights) -> str:
    """``"softmax"`` or ``"mlp"`` from the tensor names; :class:`UnknownModelFamily` otherwise."""
    names = frozenset(weights)
    if names == SOFTMAX_TENSORS:
        return "softmax"
    if names == MLP_TENSORS:
        return "mlp"
    raise UnknownModelFamily(f"tensors {sorted(names)} match no built-in model family (softmax, mlp)")


def init_softmax(features: int, classes: int) -> dict[str, np.ndarray]:
    """A zero softmax-regression model."""
    return {
        "dense.weight": np.zeros((features, classes), np.float32),
        "dense.bias": np.zeros(classes, np.float32),
    }


def init_mlp(features: int, hidden: int, classes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An MLP with He-scaled Gaussian weights and zero biases."""
    scale = np.sqrt(2.0 / features)
    return {
        "hidden.weight": (rng.standard_normal((features, hidden)) * scale).astype(np.float32),
        "hidden.bias": np.zeros(hidden, np.float32),
        "output.weight": (rng.standard_normal((hidden, classes)) * np.sqrt(1.0 / hidden)).astype(np.float32),
        "output.bias": np.zeros(classes, np.float32),
    }


def mlp_forward(weights: Weights, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MLP's forward pass: hidden pre-activation, hidden ReLU output and logits (the backward pass
    needs all three)."""
    pre: np.ndarray = X @ weights["hidden.weight"] + weights["hidden.bias"]
    hidden = np.maximum(pre, 0)
    out: np.ndarray = hidden @ weights["output.weight"] + weights["output.bias"]
    return pre, hidden, out


def logits(weights: Weights, X: np.ndarray) -> np.ndarray:
    """The forward pass: class scores of each row of ``X`` (the family is told by the tensor names)."""
    out: np.ndarray
    if family_of(weights) == "softmax":
        out = X @ weights["dense.weight"] + weights["dense.bias"]
    else:
        _, _, out = mlp_forward(weights, X)
    return out


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, exact (shifted by the row maximum, no clamping of probabilities)."""
    z = z - z.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def cross_entropy(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits ``z`` for labels ``y``, and its gradient with respect to ``z``."""
    log_probs = log_softmax(z)
    n = len(y)
    loss = float(-np.mean(log_probs[np.arange(n), y]))
    grad = np.exp(log_probs)
    grad[np.arange(n), y] -= 1.0
    return loss, grad / n


def example_losses(weights: Weights, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of every example (float64); all +inf when the model's outputs are not finite.

    The scores need the losses one by one, not only their mean: the spread of the per-example differences
    between two models says which differences the validation set can resolve at all.
    """
    with np.errstate(all="ignore"):
        z = logits(weights, X.astype(np.float32))
        if not np.isfinite(z).all():
            return np.full(len(y), np.inf)
        losses: np.ndarray = -log_softmax(z.astype(np.float64))[np.arange(len(y)), y]
    return losses


def evaluate(weights: Weights, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy. A model with non-finite weights or outputs scores (inf, 0)."""
    with np.errstate(all="ignore"):
        z = logits(weights, X.astype(np.float32))
        if not np.isfinite(z).all():
            return float("inf"), 0.0
        loss, _ = cross_entropy(z.astype(np.float64), y)
    accuracy = float((z.argmax(axis=1) == y).mean())
    return loss, accuracy


def train_softmax(
    weights: Weights,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch: int,
    rng: np.random.Generator,
    l2: float = 1e-4,
) -> dict[str, np.ndarray]:
    """Mini-batch SGD on the softmax model's cross-entropy; returns new weights (inputs untouched).

    L2 applies to the weight matrix only.
    """
    model = {name: np.array(weights[name], dtype=np.float32) for name in ("dense.weight", "dense.bias")}
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            _, g = cross_entropy(logits(model, X[idx]), y[idx])
            model["dense.weight"] -= lr * (X[idx].T @ g + l2 * model["dense.weight"])
            model["dense.bias"] -= lr * g.sum(axis=0)
    return model


def train_mlp(
    weights: Weights,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch: int,
    rng: np.random.Generator,
    l2: float = 1e-4,
) -> dict[str, np.ndarray]:
    """Mini-batch SGD on the MLP's cross-entropy (ReLU hidden layer); returns new weights.

    L2 applies to the weight matrices only.
    """
    w = {name: np.array(weights[name], dtype=np.float32) for name in MLP_TENSORS}
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            pre, hidden, z = mlp_forward(w, X[idx])
            _, g = cross_entropy(z, y[idx])
            g_hidden = (g @ w["output.weight"].T) * (pre > 0)
            w["output.weight"] -= lr * (hidden.T @ g + l2 * w["output.weight"])
            w["output.bias"] -= lr * g.sum(axis=0)
            w["hidden.weight"] -= lr * (X[idx].T @ g_hidden + l2 * w["hidden.weight"])
            w["hidden.bias"] -= lr * g_hidden.sum(axis=0)
    return w


def train(
    weights: Weights,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Mini-batch SGD for either built-in family (the server's own training, e.g. FLTrust's reference)."""
    if family_of(weights) == "softmax":
        return train_softmax(weights, X, y, epochs=epochs, lr=lr, batch=batch, rng=rng)
    return train_mlp(weights, X, y, epochs=epochs, lr=lr, batch=batch, rng=rng)
