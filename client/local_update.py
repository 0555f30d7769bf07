"""One local update: train from the verified global weights, measure, take the delta, privatize it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.errors import TrainingError
from client.training import (
    DPReport,
    EpochCallback,
    LocalDP,
    Metrics,
    NumpyTrainer,
    TrainFn,
    Weights,
    compute_delta,
    global_norm,
    train_locally,
    trainer_for_spec,
)


@dataclass(frozen=True)
class LocalTraining:
    """What one local training produced: the weights, the (privatized) delta and how it went."""

    weights: Weights = field(repr=False)
    delta: Weights = field(repr=False)
    num_samples: int
    delta_norm: float
    before: Metrics | None
    after: Metrics | None
    dp: DPReport | None
    seconds: float


def builtin_trainer(
    spec: Mapping[str, Any], options: Mapping[str, Any], progress: EpochCallback | None = None
) -> NumpyTrainer:
    """The built-in trainer for a model's tensor spec, with these hyperparameters and progress callback."""
    return trainer_for_spec(spec, **options).with_progress(progress)


def train_update(
    global_weights: Weights,
    data: Any,
    train_fn: TrainFn,
    *,
    dp: LocalDP | None = None,
    seed: int | np.random.Generator | None = None,
    num_samples: int | None = None,
    eval_data: Any = None,
) -> LocalTraining:
    """Train ``train_fn`` on ``data`` from ``global_weights``; returns the (optionally privatized) delta.

    A trainer with an ``evaluate(weights, data)`` method (the built-in ones) is measured before and after
    on ``eval_data`` (default: the training data). ``num_samples`` defaults to ``len(data)``.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    evaluate = getattr(train_fn, "evaluate", None)
    check = eval_data if eval_data is not None else data
    before = evaluate(global_weights, check) if callable(evaluate) else None
    local = train_locally(global_weights, data, train_fn, rng)
    after = evaluate(local, check) if callable(evaluate) else None
    delta = compute_delta(local, global_weights)
    report = None
    if dp is not None:
        delta, report = dp.privatize(delta, rng)
    if num_samples is None:
        try:
            num_samples = len(data)
        except TypeError:
            raise TrainingError("pass num_samples= for data without a length") from None
    if num_samples < 1:
        raise TrainingError("an update needs at least one training sample")
    return LocalTraining(
        local,
        delta,
        int(num_samples),
        global_norm(delta),
        before,
        after,
        report,
        time.perf_counter() - started,
    )
