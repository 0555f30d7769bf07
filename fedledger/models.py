"""The model families the platform trains out of the box, as named float32 arrays.

This module holds their one forward pass and loss: the server (holdout evaluation, quality scores,
rollback) and the organizations' trainers (``client/training.py``, which adds the backward pass) both call
these functions, so a loss means the same thing on both sides.

- ``softmax``: ``dense.weight`` (features, classes), ``dense.bias`` (classes)
- ``mlp``: ``hidden.weight`` (features, hidden), ``hidden.bias``, ``output.weight`` (hidden, classes),
  ``output.bias``; ReLU hidden layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
        z = logits(weights, X.astype(np.float32, copy=False))
        if not np.isfinite(z).all():
            return np.full(len(y), np.inf)
        losses: np.ndarray = -log_softmax(z.astype(np.float64))[np.arange(len(y)), y]
    return losses


def evaluate(weights: Weights, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy. A model with non-finite weights or outputs scores (inf, 0)."""
    with np.errstate(all="ignore"):
        z = logits(weights, X.astype(np.float32, copy=False))
        if not np.isfinite(z).all():
            return float("inf"), 0.0
        loss, _ = cross_entropy(z.astype(np.float64), y)
    accuracy = float((z.argmax(axis=1) == y).mean())
    return loss, accuracy


# The first layer of each family (its weight matrix, its bias): the part of the model linear in its parameters.
FIRST_LAYER = {"softmax": ("dense.weight", "dense.bias"), "mlp": ("hidden.weight", "hidden.bias")}
# First layers at least this wide get one matrix product per delta in ValidationBatch.responses; narrower
# ones are multiplied a block of _NARROW_STEP input features of all deltas at a time (measured at n = 100,
# d = 1M, 200 examples: 35 % faster than blocked per-delta products for softmax's 10 classes).
_WIDE = 64
_NARROW_STEP = 1024


@dataclass(frozen=True)
class ValidationBatch:
    """Per-example losses of many models ``weights + delta`` on one validation batch, each delta read once.

    The first layer is linear in its parameters: the response of ``weights + delta`` is the base response
    ``X @ W + b`` plus ``X @ dW + db``, the delta's own response (:meth:`responses`). A linear combination of
    deltas (an aggregate without one client's share, an update rescaled) therefore has the same combination
    of their responses as its response, and its losses need only the layers after the first (none for
    softmax, the MLP's output layer): a round's 2n + 3 candidate models cost n + 1 first-layer products
    instead of 2n + 3 forward passes, and no d-sized model is built for any of them. The losses equal
    :func:`example_losses` of the same model up to float32 rounding (the sum is associated differently).
    """

    weights: Weights
    X: np.ndarray
    y: np.ndarray
    spec: Mapping[str, Sequence[int]]
    family: str = field(init=False)
    base: np.ndarray = field(init=False)
    head_index: np.ndarray = field(init=False)
    _layer: tuple[slice, slice, int, int] = field(init=False)

    def __post_init__(self) -> None:
        family = family_of(self.weights)
        if frozenset(self.spec) != frozenset(self.weights):
            raise UnknownModelFamily(
                f"the layout {sorted(self.spec)} is not the model's {sorted(self.weights)}"
            )
        offsets: dict[str, slice] = {}
        start = 0
        for name, shape in self.spec.items():
            size = int(np.prod(shape))
            offsets[name] = slice(start, start + size)
            start += size
        weight, bias = FIRST_LAYER[family]
        features, width = (int(v) for v in self.weights[weight].shape)
        head = [np.arange(s.start, s.stop) for name, s in offsets.items() if name not in (weight, bias)]
        X = np.ascontiguousarray(self.X, dtype=np.float32)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "_layer", (offsets[weight], offsets[bias], features, width))
        object.__setattr__(self, "head_index", np.concatenate(head) if head else np.zeros(0, dtype=np.int64))
        with np.errstate(all="ignore"):
            base = X @ self.weights[weight] + self.weights[bias]
        object.__setattr__(self, "base", np.asarray(base, dtype=np.float32))

    @property
    def size(self) -> int:
        """The flat parameter count of the model (the deltas' length)."""
        return sum(int(np.prod(shape)) for shape in self.spec.values())

    def responses(self, rows: np.ndarray) -> np.ndarray:
        """(k, examples, width) float32: ``X @ dW + db`` of each flat delta in ``rows`` (k, d); needs about
        twice the result's bytes.

        A sum over blocks of input features, so a worker holding only some coordinates of the deltas can
        compute its part and the parts add up.
        """
        rows = np.asarray(rows, dtype=np.float32)
        weight, bias, features, width = self._layer
        if rows.ndim != 2 or rows.shape[1] != self.size:
            raise ValueError(f"deltas must be (k, {self.size}), got {rows.shape}")
        k, m = rows.shape[0], self.X.shape[0]
        W = rows[:, weight].reshape(k, features, width)
        with np.errstate(all="ignore"):
            if width >= _WIDE:
                # A wide layer (an MLP's hidden units): one well-shaped product per row.
                out = np.empty((k, m, width), dtype=np.float32)
                for i in range(k):
                    np.matmul(self.X, W[i], out=out[i])
            else:
                # A narrow one (softmax's classes): a product per row would be k x classes columns wide and
                # stream the validation matrix k times; instead a block of input features of every row is
                # laid side by side (a copy of the block) and multiplied at once, the block staying in cache.
                acc = np.zeros((m, k * width), dtype=np.float32)
                buffer = np.empty((_NARROW_STEP, k, width), dtype=np.float32)
                for f0 in range(0, features, _NARROW_STEP):
                    b = min(_NARROW_STEP, features - f0)
                    np.copyto(buffer[:b], W[:, f0 : f0 + b, :].transpose(1, 0, 2))
                    acc += self.X[:, f0 : f0 + b] @ buffer[:b].reshape(b, k * width)
                out = np.ascontiguousarray(acc.reshape(m, k, width).transpose(1, 0, 2))
            out += rows[:, bias][:, None, :]
        return out

    def stacked_responses(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`responses` for a few examples: a narrow layer is multiplied one batched product per block
        of input features (each row's block against the examples', no copy of the rows' blocks side by
        side; that copy costs a pass over the rows whatever the examples: n = 100, d = 1M, 32 examples,
        measured 0.08 s against 0.23-0.37 s). Equal to :meth:`responses` up to float32 rounding (the sum is
        associated differently); a wide layer is computed as there."""
        rows = np.asarray(rows, dtype=np.float32)
        weight, bias, features, width = self._layer
        if width >= _WIDE:
            return self.responses(rows)
        if rows.ndim != 2 or rows.shape[1] != self.size:
            raise ValueError(f"deltas must be (k, {self.size}), got {rows.shape}")
        k, m = rows.shape[0], self.X.shape[0]
        W = rows[:, weight].reshape(k, features, width)
        # Transposed, (width x block) @ (block x examples) per row: measured 0.08 s against 0.13 s for
        # (examples x block) @ (block x width) at the size above (a product with more than `width` columns).
        XT = np.ascontiguousarray(self.X.T)
        out = np.zeros((k, width, m), dtype=np.float32)
        with np.errstate(all="ignore"):
            for f0 in range(0, features, _NARROW_STEP):
                block = slice(f0, f0 + _NARROW_STEP)
                out += np.matmul(W[:, block, :].transpose(0, 2, 1), XT[block])
            result = np.ascontiguousarray(out.transpose(0, 2, 1))
            result += rows[:, bias][:, None, :]
        return result

    def subset(self, examples: np.ndarray) -> ValidationBatch:
        """The same model on the validation examples ``examples`` (indices) only."""
        return ValidationBatch(self.weights, self.X[examples], self.y[examples], self.spec)

    def heads(self, rows: np.ndarray) -> np.ndarray:
        """(k, h): the parameters after the first layer of each flat delta (empty for softmax)."""
        return np.asarray(rows, dtype=np.float32)[:, self.head_index]

    def logits(self, response: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Class scores of ``weights + delta`` from the delta's first-layer response and head (float32)."""
        with np.errstate(all="ignore"):
            pre: np.ndarray = self.base + response
            if self.family == "softmax":
                return pre
            hidden = np.maximum(pre, 0)
            dw, db = self._head_parts(np.asarray(head, dtype=np.float32))
            z: np.ndarray = hidden @ (self.weights["output.weight"] + dw) + (self.weights["output.bias"] + db)
        return z

    def _head_parts(self, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The MLP's (output.weight, output.bias) deltas from a head vector (the layout's order)."""
        parts: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in self.spec.items():
            if name not in FIRST_LAYER["mlp"]:
                size = int(np.prod(shape))
                parts[name] = head[offset : offset + size].reshape(tuple(shape))
                offset += size
        return parts["output.weight"], parts["output.bias"]

    def losses(self, response: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Cross-entropy of every example (float64) of ``weights + delta``, as :func:`example_losses`."""
        with np.errstate(all="ignore"):
            z = self.logits(response, head)
            if not np.isfinite(z).all():
                return np.full(len(self.y), np.inf)
            losses: np.ndarray = -log_softmax(z.astype(np.float64))[np.arange(len(self.y)), self.y]
        return losses

    def metrics(self, response: np.ndarray, head: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``weights + delta``, as :func:`evaluate`."""
        with np.errstate(all="ignore"):
            z = self.logits(response, head)
            if not np.isfinite(z).all():
                return float("inf"), 0.0
            loss, _ = cross_entropy(z.astype(np.float64), self.y)
        return loss, float((z.argmax(axis=1) == self.y).mean())


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
