"""A round's computation split by coordinate ranges: what each shard computes, and how the coordinator runs
:func:`aggregator.round.compute.compute_round` on what the shards send back. Pure: no database, broker or
blob store (:mod:`aggregator.worker.shards` reads the envelopes and runs the shards as Celery tasks).

Why it is exact. Stack the valid updates, the server's reference and the last public change as the rows of
Y ((n + 2) x d). Every step of the round that the rules below take reads Y only through

- inner products: norms, cosines, Gram entries (FLTrust's trust, Krum's distances, the scores' cosines and
  norms, the free-rider test), and
- linear combinations of its rows: the aggregate, each leave-one-out aggregate, each solo step, each
  rollback step,

and the model (softmax regression) maps a parameter change to class scores linearly. So each shard s sends
the partial Gram matrix ``Y_s Y_s^T`` and the partial class scores ``A_s(y_i)`` of every row (A: a change
of the parameters -> the change of the validation examples' class scores; partial: from its coordinates
only), both summed over shards by the coordinator. With ``G = U diag(l) U^T`` the rows of
``E = U diag(sqrt l)`` have exactly Y's inner products: the coordinator runs the unchanged
``compute_round`` on E (k <= n + 2 coordinates) with an ``evaluate`` that scores a change ``e`` of E's space
as ``A(Y^T w(e))  = sum_i w_i A(y_i)``, ``w(e) = U diag(1 / sqrt l) e``. The aggregate it decides maps back
to ``Y^T w``: the second pass, in which each shard writes its coordinates of the new model.

The same result as the single-worker close up to float rounding (sums in another order, float64 partials):
:data:`TOLERANCE` states the bound the tests check. Rules that look at single coordinates (median, trimmed
mean, Bulyan, centered clipping around the coordinate median), DP noise (a d-dimensional draw) and models
whose class scores are not linear in their parameters are not sharded: :func:`why_not_shardable` says why
and the worker closes such a round on one worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.round.compute import Evaluation, RoundInputs
from aggregator.round.params import RoundParams

# Rules that read the updates only through inner products and linear combinations (see the module docstring).
SHARDABLE_STRATEGIES = frozenset({"fedavg", "fltrust", "fltrust_guarded", "krum", "multi_krum", "reputation"})
SOFTMAX_TENSORS = ("dense.bias", "dense.weight")  # the softmax family, in coordinate (name) order
# What "the same result" means (checked by tests against the single-worker close): new weights within
# rtol 1e-4 + atol 1e-6 of each other, scores within 0.01 points, the same decisions (kept, flagged, paid).
TOLERANCE = {"weights_rtol": 1e-4, "weights_atol": 1e-6, "score_points": 0.01}
# Eigenvalues of the Gram matrix below this fraction of the largest are rank deficiency (two equal rows, a
# zero public change), not directions of the updates.
RANK_TOLERANCE = 1e-10


def plan_shards(size: int, updates: int, max_bytes: int, shards: int) -> list[tuple[int, int]]:
    """Coordinate ranges ``[start, stop)`` covering ``[0, size)``: ``shards`` of them when that is 2 or more,
    else as many as keep each shard's float32 slice of the ``updates`` under ``max_bytes`` (0: no limit, one
    range). One range means: close on one worker."""
    if size < 1 or updates < 0 or max_bytes < 0 or shards < 0:
        raise InvalidParameter(f"cannot plan shards of {size} coordinates x {updates} updates")
    if shards < 2:
        shards = 1 if max_bytes == 0 else math.ceil(4 * size * max(updates, 1) / max_bytes)
    shards = max(1, min(shards, size))
    bounds = np.linspace(0, size, shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def why_not_shardable(params: RoundParams, spec: Mapping[str, Sequence[int]]) -> str | None:
    """None when a round with these parameters and this model can be closed in shards, else why not."""
    if params.strategy not in SHARDABLE_STRATEGIES:
        return f"{params.strategy} reads single coordinates; only {', '.join(sorted(SHARDABLE_STRATEGIES))} are sharded"
    if params.dp is not None:
        return "DP noise is a draw over every coordinate"
    if tuple(sorted(spec)) != SOFTMAX_TENSORS:
        return "only the softmax model's class scores are linear in its parameters"
    return None


def partial_scores(
    spec: Mapping[str, Sequence[int]], features: np.ndarray, start: int, rows: np.ndarray
) -> np.ndarray:
    """``A_s`` of each row: the change of the validation examples' class scores that the coordinates
    ``[start, start + rows.shape[1])`` of each row make (softmax regression, coordinates in name order:
    ``dense.bias`` (C), then ``dense.weight`` (F x C) row-major). Returns (rows, examples, C) float64."""
    classes = int(spec["dense.bias"][0])
    n, width = rows.shape
    stop = start + width
    out = np.zeros((n, features.shape[0], classes))
    # The bias part: added to every example's scores.
    b0, b1 = start, min(stop, classes)
    if b1 > b0:
        bias = np.zeros((n, classes))
        bias[:, b0:b1] = rows[:, : b1 - b0]
        out += bias[:, None, :]
    w0 = max(start, classes)
    if stop > w0:
        # The weight part, padded to whole feature rows (at most one partial row at each end).
        first, last = (w0 - classes) // classes, -(-(stop - classes) // classes)
        block = np.zeros((n, (last - first) * classes))
        lo = w0 - classes - first * classes
        block[:, lo : lo + stop - w0] = rows[:, w0 - start :]
        block3 = block.reshape(n, last - first, classes)
        x = features[:, first:last].astype(np.float64)
        out += np.einsum("ef,nfc->nec", x, block3, optimize=True)
    return out


@dataclass(frozen=True)
class ShardStatistics:
    """What one shard sends back from the first pass: the partial Gram matrix of its rows and the partial
    class scores of each row, over the same row order (updates, then reference, then public change)."""

    gram: np.ndarray  # (r, r) float64
    scores: np.ndarray  # (r, examples, classes) float64

    @staticmethod
    def of(
        spec: Mapping[str, Sequence[int]], features: np.ndarray, start: int, rows: np.ndarray
    ) -> ShardStatistics:
        """The statistics of ``rows`` ((r, width) float32: every row's coordinates from ``start``)."""
        block = rows.astype(np.float64)
        return ShardStatistics(block @ block.T, partial_scores(spec, features, start, rows))

    def __add__(self, other: ShardStatistics) -> ShardStatistics:
        return ShardStatistics(self.gram + other.gram, self.scores + other.scores)


@dataclass(frozen=True)
class Embedding:
    """Rows E with Y's inner products (see the module docstring) and the map back to Y's row weights."""

    rows: np.ndarray  # (r, k) float64
    to_weights: np.ndarray  # (r, k): e -> w = to_weights @ e

    @classmethod
    def of(cls, gram: np.ndarray) -> Embedding:
        """From the Gram matrix of Y (symmetric positive semi-definite up to rounding)."""
        values, vectors = np.linalg.eigh((gram + gram.T) / 2)
        keep = values > RANK_TOLERANCE * max(float(values.max(initial=0.0)), np.finfo(float).tiny)
        values, vectors = values[keep], vectors[:, keep]
        root = np.sqrt(values)
        return cls(vectors * root, vectors / root)

    @property
    def dimension(self) -> int:
        """k: the rank of Y."""
        return int(self.rows.shape[1])


def embedded_evaluation(
    embedding: Embedding, base_scores: np.ndarray, row_scores: np.ndarray, labels: np.ndarray
) -> Evaluation:
    """``evaluate`` for :class:`RoundInputs` in E's space: (loss of every validation example, accuracy) of the
    model base + Y^T w(e), from the base model's class scores and each row's (summed over shards)."""

    def evaluate(weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float | None]:
        e = np.asarray(weights["embedded"], dtype=np.float64)
        with np.errstate(all="ignore"):
            z = base_scores + np.tensordot(embedding.to_weights @ e, row_scores, axes=1)
            z32 = z.astype(np.float32)
            if not np.isfinite(z32).all():
                return np.full(len(labels), np.inf), 0.0
            shifted = z32.astype(np.float64) - z32.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        losses: np.ndarray = -log_probs[np.arange(len(labels)), labels]
        return losses, float((z32.argmax(axis=1) == labels).mean())

    return evaluate


def embedded_inputs(
    inputs: RoundInputs,
    embedding: Embedding,
    has_reference: bool,
    has_public_change: bool,
    evaluate: Evaluation,
) -> RoundInputs:
    """``inputs`` (metadata, parameters, times) with E's rows for the updates, reference and public change,
    a zero model of k coordinates and the embedded ``evaluate``: what the coordinator's compute_round runs on."""
    n = len(inputs.clients)
    rows = embedding.rows.astype(np.float32)
    k = embedding.dimension
    return RoundInputs(
        round_id=inputs.round_id,
        params=inputs.params,
        opened_at=inputs.opened_at,
        deadline=inputs.deadline,
        extensions=inputs.extensions,
        clients=inputs.clients,
        deltas=rows[:n],
        rejected=inputs.rejected,
        weights={"embedded": np.zeros(k, dtype=np.float32)},
        spec={"embedded": (k,)},
        holdout=None,
        dp_rounds_spent=inputs.dp_rounds_spent,
        reference=rows[n] if has_reference else None,
        evaluate=evaluate,
        public_change=rows[n + int(has_reference)] if has_public_change else None,
    )


def row_weights(embedding: Embedding, change: np.ndarray) -> np.ndarray:
    """The weights w over Y's rows of a change in E's space (the kept model minus the base): the new model is
    base + Y^T w."""
    return embedding.to_weights @ np.asarray(change, dtype=np.float64)


def combine(rows: np.ndarray, weights: np.ndarray, base: np.ndarray) -> np.ndarray:
    """A shard's coordinates of the new model: base + Y_s^T w, in float32 as the single-worker close keeps it."""
    change = (np.asarray(weights, dtype=np.float64) @ rows.astype(np.float64)).astype(np.float32)
    out: np.ndarray = base.astype(np.float32) + change
    return out
