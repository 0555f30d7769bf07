"""The model families the platform trains out of the box, as named float32 arrays.

Both the server (holdout evaluation, quality scores, rollback) and the organizations' trainers use these
forward passes, so a loss means the same thing on both sides.

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
    pass


def family_of(weights: Weights) -> str:
    names = frozenset(weights)
    if names == SOFTMAX_TENSORS:
        return "softmax"
    if names == MLP_TENSORS:
        return "mlp"
    raise UnknownModelFamily(f"tensors {sorted(names)} match no built-in model family (softmax, mlp)")


def init_softmax(features: int, classes: int) -> dict[str, np.ndarray]:
    return {
        "dense.weight": np.zeros((features, classes), np.float32),
        "dense.bias": np.zeros(classes, np.float32),
    }


def init_mlp(features: int, hidden: int, classes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    scale = np.sqrt(2.0 / features)
    return {
        "hidden.weight": (rng.standard_normal((features, hidden)) * scale).astype(np.float32),
        "hidden.bias": np.zeros(hidden, np.float32),
        "output.weight": (rng.standard_normal((hidden, classes)) * np.sqrt(1.0 / hidden)).astype(np.float32),
        "output.bias": np.zeros(classes, np.float32),
    }


def logits(weights: Weights, X: np.ndarray) -> np.ndarray:
    if family_of(weights) == "softmax":
        return X @ weights["dense.weight"] + weights["dense.bias"]
    hidden = np.maximum(X @ weights["hidden.weight"] + weights["hidden.bias"], 0.0)
    return hidden @ weights["output.weight"] + weights["output.bias"]


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def evaluate(weights: Weights, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy. A model with non-finite weights or outputs scores (inf, 0)."""
    with np.errstate(all="ignore"):
        z = logits(weights, X.astype(np.float32))
        if not np.isfinite(z).all():
            return float("inf"), 0.0
        logp = log_softmax(z.astype(np.float64))
    loss = float(-logp[np.arange(len(y)), y].mean())
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
    """Mini-batch SGD on the softmax model's cross-entropy; returns new weights (inputs untouched)."""
    W = np.array(weights["dense.weight"], dtype=np.float32)
    b = np.array(weights["dense.bias"], dtype=np.float32)
    classes = W.shape[1]
    onehot = np.eye(classes, dtype=np.float32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            z = X[idx] @ W + b
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = (p - onehot[idx]) / len(idx)
            W -= lr * (X[idx].T @ g + l2 * W)
            b -= lr * g.sum(axis=0)
    return {"dense.weight": W, "dense.bias": b}


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
    """Mini-batch SGD on the MLP's cross-entropy (ReLU hidden layer); returns new weights."""
    w = {name: np.array(weights[name], dtype=np.float32) for name in MLP_TENSORS}
    classes = w["output.bias"].shape[0]
    onehot = np.eye(classes, dtype=np.float32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            pre = X[idx] @ w["hidden.weight"] + w["hidden.bias"]
            hidden = np.maximum(pre, 0.0)
            z = hidden @ w["output.weight"] + w["output.bias"]
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = (p - onehot[idx]) / len(idx)
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
