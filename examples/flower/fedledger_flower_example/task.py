"""The organizations' own Flower training code: a NumPy softmax classifier on their share of the digits.

Nothing here knows about fedledger: this is the code an organization already has. Its two tensors are named
like fedledger's built-in ``softmax`` family (``dense.weight``, ``dense.bias``) so that the same model also
runs on a fedledger platform, whose holdout evaluation knows that family.
"""

from __future__ import annotations

import numpy as np
from flwr.client import NumPyClient

from fedledger.datasets import digits_split

FEATURES, CLASSES = 64, 10
PARAM_NAMES = ["dense.weight", "dense.bias"]  # the order of the NumPyClient's parameter lists


def initial_parameters() -> list[np.ndarray]:
    return [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]


def partition(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """This organization's IID share of the digits training split (the holdout stays with the server)."""
    X, y, _, _ = digits_split()
    order = np.random.default_rng(0).permutation(len(y))
    part = np.array_split(order, num_partitions)[partition_id]
    return X[part], y[part]


def loss_and_accuracy(params: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    z = X @ params[0] + params[1]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(axis=1) == y).mean())


class DigitsClient(NumPyClient):
    """Mini-batch SGD on the softmax cross-entropy. ``attack`` makes the client Byzantine (for the demo)."""

    def __init__(
        self, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int, attack: str = ""
    ) -> None:
        self.X, self.y, self.epochs, self.lr, self.attack = X, y, epochs, lr, attack
        self.partition_id = seed
        self.rng = np.random.default_rng(seed)

    def get_parameters(self, config):  # type: ignore[no-untyped-def]
        return initial_parameters()

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        W, b = (np.array(p, dtype=np.float32) for p in parameters)
        onehot = np.eye(CLASSES, dtype=np.float32)[self.y]
        for _ in range(self.epochs):
            order = self.rng.permutation(len(self.y))
            for start in range(0, len(order), 32):
                idx = order[start : start + 32]
                z = self.X[idx] @ W + b
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                g = (p - onehot[idx]) / len(idx)
                W -= self.lr * (self.X[idx].T @ g + 1e-4 * W)
                b -= self.lr * g.sum(axis=0)
        new = [W, b]
        if self.attack == "scaling":  # send 100x the honest change
            new = [p0 + 100.0 * (p1 - p0) for p0, p1 in zip(parameters, new, strict=True)]
        elif self.attack == "signflip":  # send the opposite change, amplified
            new = [p0 - 4.0 * (p1 - p0) for p0, p1 in zip(parameters, new, strict=True)]
        loss, accuracy = loss_and_accuracy(new, self.X, self.y)
        metrics = {"train-loss": loss, "train-accuracy": accuracy, "partition-id": self.partition_id}
        return new, len(self.y), metrics

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        loss, accuracy = loss_and_accuracy(parameters, self.X, self.y)
        return loss, len(self.y), {"accuracy": accuracy}
