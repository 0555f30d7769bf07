"""Local training: any model given as named float32 arrays, plus built-in NumPy trainers for tabular data.

The interface
-------------
A model is a ``dict[str, np.ndarray]`` of float32 tensors (what the server stores as safetensors). A
trainer is any callable ``train(weights, data, rng) -> new_weights`` (:data:`TrainFn`): it receives a copy
of the global weights, the organization's data (any object the callable understands) and a seeded
``numpy.random.Generator``, and returns weights with the same names and shapes. :func:`train_locally`
runs one, checks its output (names, shapes, finiteness), and :func:`compute_delta` gives what is sent:
``local - global``.

Built-in trainers (mini-batch SGD, seeded, pure NumPy) for :class:`client.data.Dataset` data:

- :class:`SoftmaxRegression`: tensors ``dense.weight`` (features × classes) and ``dense.bias``;
- :class:`MLPClassifier`: one ReLU hidden layer, tensors ``hidden.weight``, ``hidden.bias``,
  ``output.weight``, ``output.bias``.

Their forward pass and loss are the platform's (:mod:`fedledger.models`, which the server's holdout
evaluation uses too); the trainers add the backward pass.

:func:`trainer_for_spec` picks the built-in trainer whose tensor names and shapes match a model's spec, so a
client can train whatever the federation's genesis model is, as long as it is one of these.

Local differential privacy
--------------------------
:class:`LocalDP` privatizes a delta *before it leaves the organization*: the delta's global L2 norm (all
tensors together) is clipped to ``clip_norm`` = C, then independent Gaussian noise N(0, (σ·C)²) is added
to every entry (σ = ``noise_multiplier``). Whatever the local data, the clipped delta has norm at most C,
so under the add/remove-one-organization relation of user-level DP in federated learning one round is a
Gaussian mechanism with L2 sensitivity C and noise multiplier σ, protecting the organization's whole
local data set. :func:`dp_epsilon` gives the (ε, δ) spent
over a number of rounds by RDP composition. This protects the organization from the server and from
anyone who sees its update, independent of any central DP the aggregator adds; the price is noise of
norm about σ·C·sqrt(number of parameters) in every update, so it suits many organizations or large σ·C
tolerance. Compression (top-k, float16) applied after the noise is post-processing and costs no privacy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from client.data import Dataset
from client.errors import TrainingError
from fedledger import models as platform_models
from fedledger.privacy import epsilon_after

Weights = dict[str, np.ndarray]
TrainFn = Callable[[Weights, Any, np.random.Generator], Weights]
# (epochs done, epochs in total)
EpochCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------- deltas
def as_float32(weights: Mapping[str, np.ndarray]) -> Weights:
    """A float32, C-contiguous, writable copy."""
    return {name: np.array(value, dtype=np.float32, copy=True, order="C") for name, value in weights.items()}


def check_compatible(
    reference: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], what: str = "weights"
) -> None:
    """Same tensor names and shapes as ``reference``, all finite; else :class:`TrainingError`."""
    missing, extra = sorted(set(reference) - set(weights)), sorted(set(weights) - set(reference))
    if missing or extra:
        raise TrainingError(f"{what} do not match the model: missing {missing}, unexpected {extra}")
    for name, value in weights.items():
        if np.shape(value) != np.shape(reference[name]):
            raise TrainingError(
                f"{what}: tensor {name!r} has shape {np.shape(value)}, the model has {np.shape(reference[name])}"
            )
        if not np.isfinite(value).all():
            raise TrainingError(
                f"{what}: tensor {name!r} holds NaN or Inf (training diverged: lower the learning rate)"
            )


def compute_delta(local: Mapping[str, np.ndarray], global_: Mapping[str, np.ndarray]) -> Weights:
    """``local - global``, per tensor, float32."""
    check_compatible(global_, local, "local weights")
    return {
        name: (np.asarray(local[name], np.float32) - np.asarray(global_[name], np.float32))
        for name in global_
    }


def apply_delta(global_: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> Weights:
    """``global + delta``, per tensor, float32 (the inverse of :func:`compute_delta`)."""
    check_compatible(global_, delta, "delta")
    return {
        name: (np.asarray(global_[name], np.float32) + np.asarray(delta[name], np.float32))
        for name in global_
    }


def global_norm(tensors: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all tensors together (float64 accumulation)."""
    return float(np.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in tensors.values())))


def train_locally(
    global_weights: Mapping[str, np.ndarray], data: Any, train: TrainFn, rng: np.random.Generator | int = 0
) -> Weights:
    """Run any trainer on a copy of the global weights and check its result."""
    rng = np.random.default_rng(rng)
    reference = as_float32(global_weights)
    try:
        result = train(as_float32(reference), data, rng)
    except TrainingError:
        raise
    except (ValueError, IndexError) as exc:
        raise TrainingError(f"the trainer failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Mapping):
        raise TrainingError(f"the trainer must return a dict of named arrays, got {type(result).__name__}")
    check_compatible(reference, result, "trained weights")
    return as_float32(result)


# --------------------------------------------------------------------------------------------- local DP
@dataclass(frozen=True)
class DPReport:
    """What local DP did to one delta: its norm before clipping, whether it was clipped, the noise's std."""

    norm_before: float
    clipped: bool
    noise_std: float


@dataclass(frozen=True)
class LocalDP:
    """Clip the delta's global L2 norm to ``clip_norm`` (C), add N(0, (noise_multiplier·C)²) per entry."""

    clip_norm: float
    noise_multiplier: float = 0.0

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and np.isfinite(self.clip_norm)):
            raise TrainingError("the DP clip norm must be a positive number")
        if not (self.noise_multiplier >= 0 and np.isfinite(self.noise_multiplier)):
            raise TrainingError("the DP noise multiplier must be >= 0")

    def privatize(
        self, delta: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[Weights, DPReport]:
        """The clipped and noised delta, and the report of what was done."""
        clipped, norm = clip_by_global_norm(delta, self.clip_norm)
        std = self.noise_multiplier * self.clip_norm
        if std > 0:
            clipped = {
                n: (t + rng.normal(0.0, std, size=t.shape)).astype(np.float32) for n, t in clipped.items()
            }
        return clipped, DPReport(norm, norm > self.clip_norm, std)


def clip_by_global_norm(delta: Mapping[str, np.ndarray], clip_norm: float) -> tuple[Weights, float]:
    """Scale all tensors by ``min(1, clip_norm / ||delta||)``; returns the clipped delta and the norm before."""
    norm = global_norm(delta)
    scale = 1.0 if norm <= clip_norm or norm == 0 else clip_norm / norm
    return {
        n: (np.asarray(t, np.float32) * np.float32(scale)).astype(np.float32) for n, t in delta.items()
    }, norm


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float = 1e-5) -> float:
    """ε of ``rounds`` Gaussian mechanisms with this noise multiplier at ``delta`` (RDP accountant)."""
    # The server's accountant, at full participation (an organization's own update is in every round).
    return epsilon_after(noise_multiplier, 1.0, int(rounds), delta)


# --------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Metrics:
    """Loss and accuracy of a model on a data set of ``samples`` rows."""

    loss: float
    accuracy: float
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        """The metrics as a JSON-friendly dict."""
        return {"loss": self.loss, "accuracy": self.accuracy, "samples": self.samples}


@dataclass(frozen=True)
class NumpyTrainer:
    """Mini-batch SGD (with optional momentum and L2) for a classifier over :class:`Dataset` data.

    Instances are :data:`TrainFn` callables: ``trainer(weights, data, rng)``. ``progress`` (set with
    :meth:`with_progress`) is called after every epoch.
    """

    n_features: int
    n_classes: int
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.1
    momentum: float = 0.0
    l2: float = 1e-4
    progress: EpochCallback | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_classes < 2:
            raise TrainingError("a classifier needs at least one feature and two classes")
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0 or not 0 <= self.momentum < 1:
            raise TrainingError(
                "epochs >= 0, batch_size >= 1, learning_rate > 0 and momentum in [0, 1) are required"
            )

    # subclasses
    def spec(self) -> dict[str, tuple[int, ...]]:
        """``{tensor name: shape}`` of this architecture."""
        raise NotImplementedError

    def init_weights(self, rng: np.random.Generator | int = 0) -> Weights:
        """Initial weights for this architecture (seeded)."""
        raise NotImplementedError

    def loss_and_gradients(
        self, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> tuple[float, Weights]:
        """Mean loss on the batch and its gradient for every tensor (the backward pass)."""
        raise NotImplementedError

    # shared
    def with_progress(self, progress: EpochCallback | None) -> NumpyTrainer:
        """A copy of this trainer that calls ``progress(epochs done, epochs in total)`` after every epoch."""
        return replace(self, progress=progress)

    def check_data(self, data: Any) -> Dataset:
        """``data`` as a :class:`Dataset` this trainer can use, or :class:`TrainingError` saying why not."""
        if not isinstance(data, Dataset):
            raise TrainingError(
                f"{type(self).__name__} trains on a client.data.Dataset, got {type(data).__name__}"
            )
        if data.n_features != self.n_features:
            raise TrainingError(
                f"the data has {data.n_features} features, the model expects {self.n_features}"
            )
        if len(data) == 0:
            raise TrainingError("the data set is empty")
        if data.y.min() < 0 or data.y.max() >= self.n_classes:
            raise TrainingError(
                f"labels must be in 0..{self.n_classes - 1}, the data has {data.y.min()}..{data.y.max()}"
            )
        return data

    def train(self, weights: Mapping[str, np.ndarray], data: Any, rng: np.random.Generator) -> Weights:
        """Train a copy of ``weights`` on ``data`` for ``epochs`` epochs; returns the new weights."""
        data = self.check_data(data)
        w = as_float32(weights)
        check_compatible(self.spec_arrays(), w, "initial weights")
        velocity = {name: np.zeros_like(value) for name, value in w.items()}
        lr, mu = np.float32(self.learning_rate), np.float32(self.momentum)
        n = len(data)
        for epoch in range(self.epochs):
            order = rng.permutation(n)
            # Overflow is detected below, once per epoch, and reported as divergence.
            with np.errstate(over="ignore", invalid="ignore"):
                for start in range(0, n, self.batch_size):
                    batch = order[start : start + self.batch_size]
                    _, grads = self.loss_and_gradients(w, data.x[batch], data.y[batch])
                    for name, grad in grads.items():
                        if self.l2:
                            grad = grad + np.float32(self.l2) * w[name]
                        velocity[name] = mu * velocity[name] + grad.astype(np.float32)
                        w[name] -= lr * velocity[name]
            if not all(np.isfinite(v).all() for v in w.values()):
                raise TrainingError(f"training diverged in epoch {epoch + 1}: lower the learning rate")
            if self.progress is not None:
                self.progress(epoch + 1, self.epochs)
        return w

    __call__ = train

    def logits(self, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The platform's forward pass (:func:`fedledger.models.logits`), the one the server evaluates."""
        return platform_models.logits(weights, x)

    def evaluate(self, weights: Mapping[str, np.ndarray], data: Dataset) -> Metrics:
        """Loss and accuracy on ``data``, computed exactly as the server's holdout evaluation does."""
        data = self.check_data(data)
        loss, accuracy = platform_models.evaluate(as_float32(weights), data.x, data.y)
        return Metrics(loss, accuracy, len(data))

    def predict(self, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The predicted class of each row of ``x``."""
        predicted: np.ndarray = self.logits(as_float32(weights), np.asarray(x, np.float32)).argmax(axis=1)
        return predicted

    def spec_arrays(self) -> Weights:
        """Zero arrays of this architecture's shapes."""
        return {name: np.zeros(shape, np.float32) for name, shape in self.spec().items()}


@dataclass(frozen=True)
class SoftmaxRegression(NumpyTrainer):
    """Multinomial logistic regression: ``softmax(x @ dense.weight + dense.bias)``."""

    learning_rate: float = 0.3

    def spec(self) -> dict[str, tuple[int, ...]]:
        """``dense.weight`` (features, classes) and ``dense.bias`` (classes)."""
        return {"dense.weight": (self.n_features, self.n_classes), "dense.bias": (self.n_classes,)}

    def init_weights(self, rng: np.random.Generator | int = 0) -> Weights:
        """Zero weights (the loss is convex: any start converges)."""
        return self.spec_arrays()

    def loss_and_gradients(
        self, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> tuple[float, Weights]:
        """Cross-entropy and its gradients for ``dense.weight`` and ``dense.bias``."""
        loss, d = platform_models.cross_entropy(self.logits(weights, x), y)
        return loss, {"dense.weight": x.T @ d, "dense.bias": d.sum(axis=0)}


@dataclass(frozen=True)
class MLPClassifier(NumpyTrainer):
    """One ReLU hidden layer: ``relu(x @ hidden.weight + hidden.bias) @ output.weight + output.bias``."""

    hidden: int = 64
    learning_rate: float = 0.05
    momentum: float = 0.9

    def spec(self) -> dict[str, tuple[int, ...]]:
        """``hidden.*`` (features, hidden) and ``output.*`` (hidden, classes) tensors."""
        return {
            "hidden.weight": (self.n_features, self.hidden),
            "hidden.bias": (self.hidden,),
            "output.weight": (self.hidden, self.n_classes),
            "output.bias": (self.n_classes,),
        }

    def init_weights(self, rng: np.random.Generator | int = 0) -> Weights:
        """He initialisation of the hidden layer, Glorot of the output; zero biases. Seeded."""
        rng = np.random.default_rng(rng)
        return {
            "hidden.weight": rng.normal(
                0, np.sqrt(2.0 / self.n_features), (self.n_features, self.hidden)
            ).astype(np.float32),
            "hidden.bias": np.zeros(self.hidden, np.float32),
            "output.weight": rng.normal(
                0, np.sqrt(2.0 / (self.hidden + self.n_classes)), (self.hidden, self.n_classes)
            ).astype(np.float32),
            "output.bias": np.zeros(self.n_classes, np.float32),
        }

    def loss_and_gradients(
        self, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> tuple[float, Weights]:
        """Cross-entropy and its gradients, back-propagated through the ReLU hidden layer."""
        pre, hidden, z = platform_models.mlp_forward(weights, x)
        loss, d = platform_models.cross_entropy(z, y)
        d_hidden = (d @ weights["output.weight"].T) * (pre > 0)
        return loss, {
            "output.weight": hidden.T @ d,
            "output.bias": d.sum(axis=0),
            "hidden.weight": x.T @ d_hidden,
            "hidden.bias": d_hidden.sum(axis=0),
        }


def trainer_for_spec(spec: Mapping[str, Any], **hyperparameters: Any) -> NumpyTrainer:
    """The built-in trainer for a model's tensor spec (``{name: shape}``), with these hyperparameters.

    Raises :class:`TrainingError` for any other architecture: train those with your own :data:`TrainFn`.
    """
    shapes = {name: tuple(int(d) for d in shape) for name, shape in spec.items()}
    hyper = {k: v for k, v in hyperparameters.items() if v is not None}
    if set(shapes) == {"dense.weight", "dense.bias"} and len(shapes["dense.weight"]) == 2:
        features, classes = shapes["dense.weight"]
        trainer: NumpyTrainer = SoftmaxRegression(features, classes, **hyper)
    elif (
        set(shapes) == {"hidden.weight", "hidden.bias", "output.weight", "output.bias"}
        and len(shapes["hidden.weight"]) == 2
    ):
        features, width = shapes["hidden.weight"]
        classes = shapes["output.weight"][-1]
        trainer = MLPClassifier(features, classes, hidden=width, **hyper)
    else:
        raise TrainingError(
            f"no built-in trainer for a model with tensors {sorted(shapes)}; the built-in ones are softmax "
            "regression (dense.weight, dense.bias) and the MLP (hidden.*, output.*): pass your own train function"
        )
    if trainer.spec() != shapes:
        raise TrainingError(
            f"the model's tensor shapes {shapes} are inconsistent for {type(trainer).__name__}"
        )
    return trainer
