"""Checks on what a Flower client sent back."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Message

from fedledger.flower import Weights, to_weights


class InvalidReply(ValueError):
    """A client's reply cannot be used as an update (the reason says why); the client scores 0 honesty."""


def checked_update(weights: Weights, shapes: Mapping[str, tuple[int, ...]]) -> Weights:
    """``weights`` in the model's tensor order if they have exactly its names and shapes and are finite,
    else :class:`InvalidReply`."""
    if set(weights) != set(shapes):
        missing, extra = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
        raise InvalidReply(f"tensors differ from the model's: missing {missing}, unexpected {extra}")
    weights = {name: weights[name] for name in shapes}  # a client may list its tensors in its own order
    for name, value in weights.items():
        if value.shape != shapes[name]:
            raise InvalidReply(f"tensor {name!r} has shape {value.shape}, the model's is {shapes[name]}")
        if not np.isfinite(value).all():
            raise InvalidReply(f"tensor {name!r} holds NaN or Inf")
    return weights


def reply_update(
    message: Message, shapes: Mapping[str, tuple[int, ...]], arrays_key: str | None, weight_key: str
) -> tuple[Weights, float]:
    """The local weights and sample count a train reply carries, or :class:`InvalidReply`.

    A reply must hold one ArrayRecord (under ``arrays_key`` if given) with exactly the global model's tensor
    names and shapes, all finite, and a positive ``weight_key`` in one of its MetricRecords.
    """
    content = message.content
    records = content.array_records
    if arrays_key is not None and arrays_key in records:
        record = records[arrays_key]
    elif len(records) == 1:
        record = next(iter(records.values()))
    else:
        raise InvalidReply(f"expected one ArrayRecord, got {len(records)}")
    weights = checked_update(to_weights(record), shapes)
    samples = [metrics[weight_key] for metrics in content.metric_records.values() if weight_key in metrics]
    if len(samples) != 1 or isinstance(samples[0], list) or not float(samples[0]) > 0:
        raise InvalidReply(f"expected one positive {weight_key!r} metric, got {samples}")
    return weights, float(samples[0])
