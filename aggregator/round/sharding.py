"""A round's computation split by coordinate ranges: what each shard computes, and how the coordinator runs
:func:`aggregator.round.compute.compute_round` on what the shards send back. Pure: no database, broker or
blob store (:mod:`aggregator.worker.shards` reads the envelopes and runs the shards as Celery tasks).

Why it is exact. Stack the valid updates, the server's reference and the last public change as the rows of
Y ((n + 2) x d). Every step of the round that the rules below take reads Y only through

- inner products: norms, cosines, Gram entries (FLTrust's trust, Krum's distances, the scores' cosines and
  norms, the free-rider test), and
- linear combinations of its rows: the aggregate, each leave-one-out aggregate, each solo step, each
  rollback step,

and the model's first layer maps a parameter change to a change of its responses linearly. So each shard s
sends the partial Gram matrix ``Y_s Y_s^T`` and the partial first-layer responses ``A_s(y_i)`` of every row
(A: a change of the first layer's parameters -> the change of the validation examples' responses; partial:
from its coordinates only), both summed over shards by the coordinator. With ``G = U diag(l) U^T`` the rows
of ``E = U diag(sqrt l)`` have exactly Y's inner products: the coordinator runs the unchanged
``compute_round`` on E (k <= n + 2 coordinates) with a batched evaluator (:class:`EmbeddedBatch`, the
``ValidationBatch`` its scores use, and an ``evaluate`` for the rest) that scores a change ``e`` of E's space
from ``A(Y^T w(e)) = sum_i w_i A(y_i)``, ``w(e) = U diag(1 / sqrt l) e``: the responses of all rows in one
product, each candidate of the scores from them, as the single close scores. The aggregate it decides maps
back to ``Y^T w``: the last pass, in which each shard writes its coordinates of the new model.

The two built-in families (:class:`Layout`; coordinates in name order, as the single close lays them out):

- softmax regression: ``dense.bias`` then ``dense.weight``; the responses are the class scores, and the
  model's change is ``base_scores + sum_i w_i A(y_i)``.
- the MLP: ``hidden.bias`` then ``hidden.weight`` (the first layer: responses are the hidden
  pre-activations), then ``output.bias`` and ``output.weight`` (the head, hidden x classes + classes
  coordinates). The responses of the combination are still ``sum_i w_i A(y_i)``; the ReLU and the output
  layer are not linear, so the coordinator gathers every row's head whole (each shard sends the head
  coordinates in its range, zeros elsewhere, and the sum is the head: ``O_i``) and evaluates any
  combination as ``ReLU(base_pre + sum_i w_i A(y_i)) @ (W_out + sum_i w_i O_i) + ...``: exactly the
  single close's batched scores (:class:`EmbeddedBatch` is a :class:`fedledger.models.ValidationBatch` and
  both call its ``logits``), so every score and decision (line search, rollback, descent floor, quality)
  sees the same model.

Memory: the coordinator holds the summed responses, rows x validation examples x first-layer width float64
(100 rows x 200 examples x 1,000 hidden units = 160 MB; softmax's 10 classes, 1.6 MB), and up to about four
copies of them while it sums and embeds; :data:`MAX_RESPONSE_BYTES` (a setting) bounds them and
:func:`why_not_shardable` refuses a wider round with its size.

Rules that look at single coordinates (median, trimmed mean, Bulyan's second step, the coordinate median
centered clipping starts from) need one more pass: once the first pass's Gram matrix has decided what only
distances decide (Bulyan's selection, the rows a rule reads), each shard computes the rule's row over its
coordinates exactly as the single worker computes it over all of them (:func:`derive`; a coordinate-wise
rule reads column by column, so a range of columns is a range of the result), and sends that row's partial
inner products with Y's rows and its partial responses (and head part). Y gains the row (the aggregate, or the centre),
E is built from the larger Gram matrix, and :class:`ShardedRule` makes compute_round take the row as the
rule's aggregate (median, trimmed mean, Bulyan) or as its starting centre (centered clipping: every
iteration after the start moves the centre by a linear combination of the rows, with weights from distances
to the centre, so E's space holds the whole iteration and no pass per iteration is needed).

DP: the clip factors come from the rows' norms (the Gram matrix's diagonal), so the clipped rows are
rescaled rows of E (and the coordinate-wise rules' shards scale theirs alike). The Gaussian noise is one
more derived row: each shard draws its coordinates from a seed the coordinator takes from a copy of the
round's generator, per block of :data:`NOISE_BLOCK` coordinates (:func:`block_noise`), so the noise does
not depend on how the close is split and a recomputation draws it again. It is not the single close's
draw (that one takes d values from the round's generator in one sequence), so a DP close in shards equals
the single close in everything but the noise: same clipping, aggregate, scores and decisions, and noise of
the same distribution.

The same result as the single-worker close up to float rounding (sums in another order, float64 partials):
:data:`TOLERANCE` states the bound the tests check, for both families. A model of other tensors (whose
responses are not known to be linear in its parameters), or one whose summed responses exceed the bound,
is not sharded: :func:`why_not_shardable` says why and the worker closes such a round on one worker.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np

from aggregator.errors import AggregationError, InvalidParameter
from aggregator.round.compute import Evaluation, RoundInputs
from aggregator.round.params import RoundParams
from aggregator.strategies import Aggregated, Strategy, StrategyInputs
from aggregator.strategies.base import Detail
from aggregator.strategies.bulyan import closest_to_median_columns
from aggregator.strategies.centered_clip import CenteredClip, bucket_means
from aggregator.strategies.coordinatewise import TrimmedMean, median, trimmed_mean
from fedledger.models import FIRST_LAYER, MLP_TENSORS, SOFTMAX_TENSORS, UnknownModelFamily, ValidationBatch
from fedledger.payload import parameter_count

# Rules that read the updates only through inner products and linear combinations (see the module docstring).
LINEAR_STRATEGIES = frozenset({"fedavg", "fltrust", "fltrust_guarded", "krum", "multi_krum", "reputation"})
# Rules with a coordinate-wise step: one more pass computes its row (see the module docstring).
COORDINATE_STRATEGIES = frozenset({"median", "trimmed_mean", "bulyan", "centered_clip"})
SHARDABLE_STRATEGIES = LINEAR_STRATEGIES | COORDINATE_STRATEGIES
# What "the same result" means (checked by tests against the single-worker close): new weights within
# rtol 1e-4 + atol 1e-6 of each other, the same decisions (kept, flagged, paid), scores within 0.1 point
# and rewards within 2e-3 of each other. Quality is a difference of two validation losses over the round's
# median such difference (issue 20): the float32 rounding of the aggregate (a derived row in shards) moves
# it by up to about 7e-4 of itself: measured 0.055 points apart (median, the MLP of 70 hidden units; the
# aggregate novelty basis fits each row by that derived row); 0.1 point of quality is 0.04 of fitness,
# which moves the tier multiplier (>= 0.5) by up to 2e-3 (rewards measured 8e-5 apart).
TOLERANCE = {"weights_rtol": 1e-4, "weights_atol": 1e-6, "score_points": 0.1, "reward_rtol": 2e-3}
# The coordinator's summed float64 first-layer responses (rows x validation examples x first-layer width) at
# most: it holds up to about four copies of them while it sums the shards' and embeds (2 GiB at the limit,
# half a 4 GiB worker). 100 rows x 200 examples x 1,000 hidden units = 160 MB; softmax's 10 classes, 1.6 MB.
MAX_RESPONSE_BYTES = 512 * 2**20  # the default of FEDLEDGER_CLOSE_MAX_RESPONSE_BYTES
# A first layer at least this wide (fedledger.models' threshold: the MLP's hidden units) gets one product per row
# in partial_responses; a narrower one (softmax's classes) one product of all rows.
WIDE_LAYER = 64
# Eigenvalues of the Gram matrix below this fraction of the largest are rank deficiency (two equal rows, a
# zero public change), not directions of the updates.
RANK_TOLERANCE = 1e-10


def plan_shards(
    size: int, updates: int, max_bytes: int, shards: int, align: int = 1
) -> list[tuple[int, int]]:
    """Coordinate ranges ``[start, stop)`` covering ``[0, size)``: ``shards`` of them when that is 2 or more,
    else as many as keep each shard's float32 slice of the ``updates`` under ``max_bytes`` (0: no limit, one
    range). One range means: close on one worker. ``align``: the envelopes' coordinates per chunk; the ranges
    then start at whole chunks, so that no two shards read and decrypt the same chunk (when there are
    fewer chunks than shards, fewer ranges)."""
    if size < 1 or updates < 0 or max_bytes < 0 or shards < 0 or align < 1:
        raise InvalidParameter(f"cannot plan shards of {size} coordinates x {updates} updates")
    if shards < 2:
        shards = 1 if max_bytes == 0 else math.ceil(4 * size * max(updates, 1) / max_bytes)
    shards = max(1, min(shards, size))
    bounds = np.linspace(0, size, shards + 1).round().astype(np.int64)
    if align > 1:
        inner = np.round(bounds[1:-1] / align).astype(np.int64) * align
        bounds = np.unique(np.concatenate([[0], inner[(inner > 0) & (inner < size)], [size]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


@dataclass(frozen=True)
class Layout:
    """Where a built-in model's coordinates (in name order) sit for the shards: ``[0, linear)`` is its first
    layer, its bias (``width``) then its weight (features x ``width``, row-major), whose responses on the
    validation examples are linear in them; ``[linear, size)`` is the head (the MLP's output layer:
    ``output.bias``, then ``output.weight``; nothing for softmax), which the coordinator gathers whole."""

    family: str
    width: int  # the first layer's outputs: softmax's classes, the MLP's hidden units
    linear: int
    size: int

    @classmethod
    def of(cls, spec: Mapping[str, Sequence[int]]) -> Layout:
        """The layout of ``spec`` (:class:`UnknownModelFamily` for a model of other tensors)."""
        names = frozenset(spec)
        family = "softmax" if names == SOFTMAX_TENSORS else "mlp" if names == MLP_TENSORS else None
        if family is None:
            raise UnknownModelFamily(f"tensors {sorted(names)} match no built-in model family (softmax, mlp)")
        weight, bias = FIRST_LAYER[family]
        features, width = (int(v) for v in spec[weight])
        size = parameter_count(spec)
        # Name order puts each family's first-layer bias, then its weight, first (dense.*, hidden.* < output.*).
        assert sorted(names)[:2] == [bias, weight]
        return cls(family, width, width * (features + 1), size)

    @property
    def head(self) -> int:
        """The head's coordinates (``hidden x classes + classes`` for the MLP, 0 for softmax)."""
        return self.size - self.linear

    def response_bytes(self, rows: int, examples: int) -> int:
        """Bytes of the summed float64 first-layer responses of ``rows`` rows on ``examples`` examples."""
        return 8 * rows * examples * self.width


def why_not_shardable(
    params: RoundParams,
    spec: Mapping[str, Sequence[int]],
    rows: int = 0,
    examples: int = 0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> str | None:
    """None when a round with these parameters and this model can be closed in shards, else why not. ``rows``
    (updates, extra and derived rows) and ``examples`` (validation examples): the coordinator's summed
    responses, at most ``max_response_bytes`` (FEDLEDGER_CLOSE_MAX_RESPONSE_BYTES)."""
    if params.strategy not in SHARDABLE_STRATEGIES:
        return f"{params.strategy} has no sharded form; only {', '.join(sorted(SHARDABLE_STRATEGIES))} are sharded"
    try:
        layout = Layout.of(spec)
    except UnknownModelFamily:
        return (
            "only the built-in models (softmax, mlp) have first-layer responses linear in their parameters; "
            f"tensors {sorted(spec)} are neither"
        )
    need = layout.response_bytes(rows, examples)
    if need > max_response_bytes:
        return (
            f"the summed first-layer responses ({rows} rows x {examples} validation examples x {layout.width} "
            f"units, float64) take {need / 2**20:.0f} MiB, over the coordinator's "
            f"{max_response_bytes / 2**20:.0f} MiB (FEDLEDGER_CLOSE_MAX_RESPONSE_BYTES): use fewer validation "
            "examples or a narrower first layer, or raise the bound on workers with about four times it free"
        )
    return None


def partial_responses(
    spec: Mapping[str, Sequence[int]],
    features: np.ndarray,
    start: int,
    rows: np.ndarray,
    into: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``A_s`` of each row: the change of the validation examples' first-layer responses (softmax: its class
    scores; MLP: its hidden pre-activations) that the coordinates ``[start, start + rows.shape[1])`` of each
    row make, (rows, examples, width) float64, and the row's head coordinates in that range (rows, head)
    float64, zero elsewhere: summed over the shards, every row's whole head (see :class:`Layout`). ``into``:
    arrays of those shapes to add them to (a shard's sums over its blocks), returned; else new ones."""
    layout = Layout.of(spec)
    width = layout.width
    n, span = rows.shape
    stop = start + span
    if into is None:
        into = np.zeros((n, features.shape[0], width)), np.zeros((n, layout.head))
    out, heads = into
    # The bias part: added to every example's response.
    b0, b1 = start, min(stop, width)
    if b1 > b0:
        bias = np.zeros((n, width))
        bias[:, b0:b1] = rows[:, : b1 - b0]
        out += bias[:, None, :]
    w0, w1 = max(start, width), min(stop, layout.linear)
    if w1 > w0:
        # The weight part, padded to whole feature rows (at most one partial row at each end).
        first, last = (w0 - width) // width, -(-(w1 - width) // width)
        lo = w0 - width - first * width
        x = features[:, first:last].astype(np.float64)
        if width >= WIDE_LAYER:
            # A wide layer (the MLP's hidden units): one product per row, added in place. A product of all
            # rows at once writes and transposes a rows x examples x width temporary per block (97 MB at
            # 101 rows x 120 examples x 1,000 units), and its padded float64 copy of the block is as large.
            padded = np.zeros((last - first) * width)
            for i in range(n):
                padded[lo : lo + w1 - w0] = rows[i, w0 - start : w1 - start]
                out[i] += x @ padded.reshape(last - first, width)
        else:
            block = np.zeros((n, (last - first) * width))
            block[:, lo : lo + w1 - w0] = rows[:, w0 - start : w1 - start]
            block3 = block.reshape(n, last - first, width)
            out += np.einsum("ef,nfc->nec", x, block3, optimize=True)
    h0 = max(start, layout.linear)
    if stop > h0:
        heads[:, h0 - layout.linear : stop - layout.linear] += rows[:, h0 - start :]
    return out, heads


@dataclass(frozen=True)
class ShardStatistics:
    """What one shard sends back from the first pass: the partial Gram matrix of its rows, the partial
    first-layer responses of each row and its part of each row's head, over the same row order (updates,
    then reference, then public change)."""

    gram: np.ndarray  # (r, r) float64
    scores: np.ndarray  # (r, examples, width) float64
    heads: np.ndarray  # (r, head) float64

    @staticmethod
    def of(
        spec: Mapping[str, Sequence[int]], features: np.ndarray, start: int, rows: np.ndarray
    ) -> ShardStatistics:
        """The statistics of ``rows`` ((r, width) float32: every row's coordinates from ``start``)."""
        block = rows.astype(np.float64)
        return ShardStatistics(block @ block.T, *partial_responses(spec, features, start, rows))

    @staticmethod
    def zeros(spec: Mapping[str, Sequence[int]], rows: int, examples: int) -> ShardStatistics:
        """Statistics of ``rows`` rows of no coordinates: what :meth:`add` sums a shard's blocks into."""
        layout = Layout.of(spec)
        return ShardStatistics(
            np.zeros((rows, rows)), np.zeros((rows, examples, layout.width)), np.zeros((rows, layout.head))
        )

    def add(
        self, spec: Mapping[str, Sequence[int]], features: np.ndarray, start: int, rows: np.ndarray
    ) -> None:
        """Add the statistics of ``rows`` (as :meth:`of`) in place: a shard holds one copy of its responses,
        not one per block."""
        block = rows.astype(np.float64)
        self.gram[...] += block @ block.T
        partial_responses(spec, features, start, rows, (self.scores, self.heads))

    def __add__(self, other: ShardStatistics) -> ShardStatistics:
        return ShardStatistics(self.gram + other.gram, self.scores + other.scores, self.heads + other.heads)


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


@dataclass(frozen=True)
class EmbeddedBatch(ValidationBatch):
    """The base model's :class:`ValidationBatch` whose deltas are changes ``e`` of E's space: a delta's
    first-layer response and head are ``sum_i w_i A(y_i)`` and ``sum_i w_i O_i`` (``w = to_weights @ e``)
    from the rows' summed responses and heads; the layers after the first are the base class's. compute_round
    then scores the sharded close as it scores the single close (``RoundInputs.validation``): the responses
    of every row once (a product over the rows), then each candidate from them, not a pass over the summed
    responses per candidate (about n^2 x examples x width multiply-adds, 135 s of a 1,000-organization MLP
    round's close).

    Above the score budget the rows' responses are those of the per-row scores' examples only
    (``examples``, sorted indices of ``X``'s rows): :meth:`subset` on them is a batch like any other, and on
    every example the batch knows only the changes in the span of ``known`` (E's aggregate and reference,
    whose responses on every example the combine pass computed, and a stalled round's second candidate
    once a further combine pass has: ``known_responses``), which is all the close's decision evaluates
    there (the line search, the descent floor, the second candidate); any other change raises
    :class:`OutsideSpan` with it, for the coordinator to compute."""

    row_responses: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (r, examples, width)
    row_heads: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (r, head)
    to_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (r, k)
    examples: np.ndarray | None = None  # the examples row_responses are of; None: every one
    known: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (j, k) changes of E's space
    known_responses: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (j, X's rows, width)

    @property
    def size(self) -> int:
        """k: E's coordinates (a delta's length)."""
        return int(self.to_weights.shape[1])

    def _weights(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.size:
            raise ValueError(f"deltas must be (k, {self.size}), got {rows.shape}")
        weights: np.ndarray = rows @ self.to_weights.T
        return weights

    def responses(self, rows: np.ndarray) -> np.ndarray:
        """(j, examples, width) float32: the first-layer responses of the j deltas of E's space in ``rows``."""
        if self.examples is not None:
            return self._known_responses(rows)
        w = self._weights(rows)
        flat = self.row_responses.reshape(self.row_responses.shape[0], -1)
        with np.errstate(all="ignore"):
            out: np.ndarray = (
                (w @ flat).astype(np.float32).reshape((w.shape[0],) + self.row_responses.shape[1:])
            )
        return out

    def _known_responses(self, rows: np.ndarray) -> np.ndarray:
        """Responses on every example of changes in the span of ``known`` (see the class docstring)."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.size:
            raise ValueError(f"deltas must be (k, {self.size}), got {rows.shape}")
        coefficients = np.array([span_coefficients(row, self.known) for row in rows]).reshape(len(rows), -1)
        flat = self.known_responses.reshape(self.known_responses.shape[0], -1)
        with np.errstate(all="ignore"):
            out: np.ndarray = (
                (coefficients @ flat)
                .astype(np.float32)
                .reshape((len(rows),) + self.known_responses.shape[1:])
            )
        return out

    def stacked_responses(self, rows: np.ndarray) -> np.ndarray:
        """As :meth:`responses` (one product over the rows whatever the examples)."""
        return self.responses(rows)

    def heads(self, rows: np.ndarray) -> np.ndarray:
        """(j, head) float32: the heads of the deltas in ``rows``."""
        with np.errstate(all="ignore"):
            out: np.ndarray = (self._weights(rows) @ self.row_heads).astype(np.float32)
        return out

    def subset(self, examples: np.ndarray) -> EmbeddedBatch:
        """The same on the validation examples ``examples`` only (above the score budget: exactly the
        examples the rows' responses are of)."""
        if self.examples is None:
            responses = np.ascontiguousarray(self.row_responses[:, examples])
        elif np.array_equal(examples, self.examples):
            responses = self.row_responses
        else:
            raise InvalidParameter(
                "the shards computed the rows' responses on other validation examples than the scores use"
            )
        return EmbeddedBatch(
            self.weights,
            self.X[examples],
            self.y[examples],
            self.spec,
            responses,
            self.row_heads,
            self.to_weights,
        )


# A change the decision evaluates on every example must be in the span of the known changes to this fraction
# of its norm (float32 rounding of E's rows, and of the aggregate the rule computed in them, is about 1e-7).
SPAN_TOLERANCE = 1e-5


class OutsideSpan(InvalidParameter):
    """A change the sharded close needs on every validation example (or in the real coordinates) that is not
    in the span of the changes the shards computed there: ``change`` (E's space) is what one more combine
    pass must compute (:mod:`aggregator.worker.shards`)."""

    def __init__(self, change: np.ndarray) -> None:
        super().__init__(
            "the close evaluated a change on every validation example outside the directions the shards "
            "computed there (the aggregate's, the reference's and any extra combine pass's)"
        )
        self.change = np.asarray(change, dtype=np.float64).reshape(-1)


def span_coefficients(change: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """c with ``change = c @ basis`` ((j,) for a (j, k) basis), the first basis row alone when it suffices
    (the usual decision: a multiple of the aggregate), else a least-squares fit; :class:`OutsideSpan`
    when ``change`` is not in the span (the sharded close computed nothing else on every example)."""
    change = np.asarray(change, dtype=np.float64).reshape(-1)
    basis = np.asarray(basis, dtype=np.float64).reshape(-1, change.size)
    scale = float(np.linalg.norm(change))
    c = np.zeros(basis.shape[0])
    if scale == 0.0:
        return c
    for j in range(basis.shape[0]):  # a multiple of one known change: no cross-talk with the others
        norm2 = float(basis[j] @ basis[j])
        if norm2 > 0.0:
            c[:] = 0.0
            c[j] = float(basis[j] @ change) / norm2
            if np.linalg.norm(change - c[j] * basis[j]) <= SPAN_TOLERANCE * scale:
                return c
    if basis.shape[0] == 0:
        raise OutsideSpan(change)
    fit: np.ndarray = np.linalg.lstsq(basis.T, change, rcond=None)[0]
    if not np.linalg.norm(change - fit @ basis) <= SPAN_TOLERANCE * scale:
        raise OutsideSpan(change)
    return fit


def embedded_evaluation(
    embedding: Embedding, batch: EmbeddedBatch, row_scores: np.ndarray, row_heads: np.ndarray
) -> Evaluation:
    """``evaluate`` for :class:`RoundInputs` in E's space: (loss of every validation example, accuracy) of the
    model base + Y^T w(e), from each row's first-layer responses and head (summed over shards): the
    combination's are ``sum_i w_i`` of the rows', and ``batch`` (the base model on the validation examples)
    runs the layers after the first on them, as the single close's batched scores do. Above the score
    budget (the rows' responses on a subsample) the batch's own responses of the known changes."""

    def evaluate(weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float | None]:
        e = np.asarray(weights["embedded"], dtype=np.float64)
        with np.errstate(all="ignore"):
            if batch.examples is None:
                w = embedding.to_weights @ e
                z = batch.logits(np.tensordot(w, row_scores, axes=1), w @ row_heads)
            else:
                z = batch.logits(batch.responses(e[None, :])[0], batch.heads(e[None, :])[0])
            z32 = z.astype(np.float32)
            if not np.isfinite(z32).all():
                return np.full(len(batch.y), np.inf), 0.0
            shifted = z32.astype(np.float64) - z32.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        losses: np.ndarray = -log_probs[np.arange(len(batch.y)), batch.y]
        return losses, float((z32.argmax(axis=1) == batch.y).mean())

    return evaluate


def embedded_inputs(
    inputs: RoundInputs,
    embedding: Embedding,
    has_reference: bool,
    has_public_change: bool,
    evaluate: Evaluation | None,
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
        public_change_author=inputs.public_change_author if has_public_change else None,
        # The score budget is judged on the real model (E has k coordinates), as the single close judges it.
        model_size=sum(int(np.prod(shape)) for shape in inputs.spec.values()),
        score_budget=inputs.score_budget,
        # The second candidate of a stalled federation is a combination of the rows like the aggregate: the
        # coordinator computes it in one more combine pass when the decision asks for it.
        stalled_rounds=inputs.stalled_rounds,
    )


def row_weights(embedding: Embedding, change: np.ndarray) -> np.ndarray:
    """The weights w over Y's rows of a change in E's space (the kept model minus the base): the new model is
    base + Y^T w."""
    return embedding.to_weights @ np.asarray(change, dtype=np.float64)


# combine converts this many columns of a block to float64 at a time: a cached slice, not a float64 copy of
# the whole block (measured 3x faster for a block of 101 rows x 262K or 1,002 x 16K columns, the same sums).
COMBINE_COLUMNS = 4096


def combine(rows: np.ndarray, weights: np.ndarray, base: np.ndarray) -> np.ndarray:
    """A shard's coordinates of the new model: base + Y_s^T w, in float32 as the single-worker close keeps it."""
    w = np.asarray(weights, dtype=np.float64)
    change = np.empty(rows.shape[1], dtype=np.float32)
    for a in range(0, rows.shape[1], COMBINE_COLUMNS):
        change[a : a + COMBINE_COLUMNS] = w @ rows[:, a : a + COMBINE_COLUMNS].astype(np.float64)
    out: np.ndarray = base.astype(np.float32) + change
    return out


# What the second pass computes, per row: a JSON document (it travels in the shard's task message).
# ``rule``: "median" | "trimmed_mean" (with "beta") | "closest_to_median" (Bulyan's step, with the int
# "beta") | "bucket_median" (the median of the means of "buckets", lists of positions in "rows") | "noise"
# (with "seed" and "std": DP's Gaussian noise); ``rows``: Y's row indices the rule reads, in the order the
# single-worker close stacks them; ``scale``: DP's clip factor of each of them (float32), when clipped.
Derivation = dict[str, Any]
# DP noise is drawn per block of this many coordinates, each from (seed, block index): the same noise for
# any split of the coordinates into shards and blocks.
NOISE_BLOCK = 1 << 16


def block_noise(seed: int, std: float, start: int, stop: int) -> np.ndarray:
    """N(0, std²) float32 noise of the coordinates ``[start, stop)`` of the round's noise vector."""
    out = np.empty(stop - start, dtype=np.float32)
    for block in range(start // NOISE_BLOCK, -(-stop // NOISE_BLOCK)):
        lo = block * NOISE_BLOCK
        draw = np.random.default_rng([seed, block]).normal(0.0, std, NOISE_BLOCK).astype(np.float32)
        a, b = max(lo, start), min(lo + NOISE_BLOCK, stop)
        out[a - start : b - start] = draw[a - lo : b - lo]
    return out


def noise_seed(rng: np.random.Generator) -> int:
    """The seed of a sharded close's DP noise: drawn from a copy of the round's generator, which the
    close's compute_round then gets untouched (so the rules draw as in the single close)."""
    return int(copy.deepcopy(rng).integers(2**63))


def derive(rows: np.ndarray, derivations: Sequence[Derivation], start: int) -> np.ndarray:
    """The derived rows over one block of coordinates from ``start``: (len(derivations), width) float32,
    each computed by the same function the single-worker close calls, on the same rows in the same order."""
    out = np.empty((len(derivations), rows.shape[1]), dtype=np.float32)
    for j, spec in enumerate(derivations):
        rule = spec["rule"]
        if rule == "noise":
            out[j] = block_noise(int(spec["seed"]), float(spec["std"]), start, start + rows.shape[1])
            continue
        X = rows[np.asarray(spec["rows"], dtype=np.int64)]
        if "scale" in spec:  # DP's clipping, as dp.clip_rows does it: float32 rows times float32 factors
            X = X * np.asarray(spec["scale"], dtype=np.float32)[:, None]
        if rule == "median":
            out[j] = median(X)
        elif rule == "trimmed_mean":
            out[j] = trimmed_mean(X, float(spec["beta"]))
        elif rule == "closest_to_median":
            out[j] = closest_to_median_columns(X, np.arange(X.shape[0]), int(spec["beta"]))
        elif rule == "bucket_median":
            order = _Fixed(spec["buckets"])
            out[j] = median(bucket_means(X, len(spec["buckets"][0]), order))  # type: ignore[arg-type]
        else:
            raise InvalidParameter(f"unknown derived row {rule!r}")
    return out


class _Fixed:
    """Stands in for the round's generator in :func:`bucket_means`: the permutation the coordinator drew
    with a copy of it (the buckets, concatenated), so that every shard groups the rows alike."""

    def __init__(self, buckets: Sequence[Sequence[int]]) -> None:
        self.order = np.asarray([i for bucket in buckets for i in bucket], dtype=np.int64)

    def permutation(self, n: int) -> np.ndarray:
        assert n == self.order.size
        return self.order


@dataclass(frozen=True)
class DerivedStatistics:
    """What one shard sends back from the second pass: the derived rows' partial inner products with Y's
    rows (m, r) and with each other (m, m), their partial first-layer responses (m, examples, width) and
    their part of their heads (m, head)."""

    cross: np.ndarray
    gram: np.ndarray
    scores: np.ndarray
    heads: np.ndarray

    @staticmethod
    def of(
        spec: Mapping[str, Sequence[int]],
        features: np.ndarray,
        start: int,
        rows: np.ndarray,
        derived: np.ndarray,
    ) -> DerivedStatistics:
        """The statistics of ``derived`` ((m, width) float32) against ``rows`` ((r, width)) from ``start``."""
        d64 = derived.astype(np.float64)
        return DerivedStatistics(
            d64 @ rows.astype(np.float64).T, d64 @ d64.T, *partial_responses(spec, features, start, derived)
        )

    def __add__(self, other: DerivedStatistics) -> DerivedStatistics:
        return DerivedStatistics(
            self.cross + other.cross,
            self.gram + other.gram,
            self.scores + other.scores,
            self.heads + other.heads,
        )


def augment(statistics: ShardStatistics, derived: DerivedStatistics, rows: Sequence[int]) -> ShardStatistics:
    """The statistics of Y's ``rows`` followed by the derived rows: the larger Gram matrix and scores."""
    index = list(rows)
    gram = statistics.gram[np.ix_(index, index)]
    cross = derived.cross[:, index]
    return ShardStatistics(
        np.block([[gram, cross.T], [cross, derived.gram]]),
        np.concatenate([statistics.scores[index], derived.scores]),
        np.concatenate([statistics.heads[index], derived.heads]),
    )


@dataclass(frozen=True)
class Plan:
    """What a coordinate-wise rule needs from the second pass, decided from the first pass's E: the rows to
    derive, and what compute_round's rule then does with the first of them (``mode``: "aggregate": it is
    the aggregate, with ``selected`` and ``details`` as the rule decided them; "center": centered clipping
    starts from it). ``failure``: the rule refused these clients (compute_round reports it; no pass)."""

    derivations: tuple[Derivation, ...] = ()
    mode: str | None = None
    selected: np.ndarray | None = None
    details: Mapping[str, Detail] | None = None
    failure: AggregationError | None = None


def plan_derivations(
    strategy: Strategy,
    members: np.ndarray,
    member_rows: Sequence[int],
    inputs: StrategyInputs,
    rng: np.random.Generator,
    scale: np.ndarray | None = None,
) -> Plan:
    """The second pass of a close under ``strategy``: ``members`` are the eligible clients' rows in E's space
    (what the rule would aggregate, clipped under DP), ``member_rows`` their indices among Y's rows,
    ``inputs`` as compute_round builds them, ``rng`` the generator compute_round will be given (copied, not
    drawn from), ``scale`` the members' DP clip factors (None: no DP)."""
    rows = [int(i) for i in member_rows]
    clip = {} if scale is None else {"scale": [float(f) for f in np.asarray(scale, dtype=np.float32)]}
    if strategy.name not in COORDINATE_STRATEGIES:
        return Plan()
    if strategy.name == "centered_clip":
        # compute_round hands the rule ``rng.spawn(1)[0]``; bucketing draws the permutation from it first.
        bucket_size = strategy.bucket_size if isinstance(strategy, CenteredClip) else 1
        if bucket_size == 1:
            return Plan(({"rule": "median", "rows": rows, **clip},), "center")
        order = copy.deepcopy(rng).spawn(1)[0].permutation(len(rows)).tolist()
        buckets = [order[b : b + bucket_size] for b in range(0, len(rows), bucket_size)]
        return Plan(({"rule": "bucket_median", "rows": rows, "buckets": buckets, **clip},), "center")
    try:
        # In E's space the rule decides what distances decide (Bulyan's selection) and its details; its
        # vector there is not the coordinate-wise one and is dropped.
        result = strategy.aggregate(members, replace(inputs, rng=copy.deepcopy(rng).spawn(1)[0]))
    except AggregationError as exc:
        return Plan(failure=exc)
    if strategy.name == "median":
        spec: Derivation = {"rule": "median", "rows": rows, **clip}
    elif isinstance(strategy, TrimmedMean):
        spec = {"rule": "trimmed_mean", "rows": rows, "beta": strategy.beta, **clip}
    else:  # bulyan: the mean of the n - 4f selected values closest to their median, per coordinate
        chosen = np.sort(result.selected)
        f = int(result.details["f"] or 0)
        spec = {"rule": "closest_to_median", "rows": [rows[i] for i in chosen], "beta": chosen.size - 2 * f}
        if scale is not None:
            spec["scale"] = [clip["scale"][i] for i in chosen]
    return Plan((spec,), "aggregate", result.selected, dict(result.details))


class ShardedRule(Strategy):
    """The round's rule in E's space, for compute_round (:attr:`RoundInputs.strategy`): under its name and
    with its parameters, it returns the derived row ``row`` (E's coordinates) as the aggregate, or runs the
    rule from it as the centre; without a derived row it is the rule itself (linear rules). ``noise``: DP's
    noise row in E's coordinates, added to the aggregate as the single close adds its draw (the close then
    runs compute_round without DP: clipping and accounting are the coordinator's)."""

    name = "sharded"

    def __init__(
        self, inner: Strategy, plan: Plan, row: np.ndarray | None, noise: np.ndarray | None = None
    ) -> None:
        self.inner, self.plan, self.row, self.noise = inner, plan, row, noise
        self.__dict__["name"] = inner.name  # the round's record and reasons name the real rule

    @classmethod
    def from_params(cls, params: RoundParams) -> Self:
        """Never built from parameters: the sharded close builds it around the round's rule."""
        raise InvalidParameter(
            "a sharded rule wraps the round's strategy; build that one from the parameters"
        )

    def required_clients(self) -> int:
        """As the rule."""
        return self.inner.required_clients()

    def describe(self) -> dict[str, Detail]:
        """As the rule."""
        return self.inner.describe()

    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """The rule's result with the shards' row in it (see the class docstring)."""
        if self.plan.failure is not None:
            raise self.plan.failure
        if self.plan.mode == "aggregate":
            assert self.row is not None and self.plan.selected is not None and self.plan.details is not None
            result = Aggregated(self.row.astype(np.float32), self.plan.selected, self.plan.details)
        else:
            if self.plan.mode == "center":
                clients = replace(clients, center=self.row)
            result = self.inner.aggregate(X, clients)
        if self.noise is None:
            return result
        return replace(result, vector=result.vector + self.noise.astype(np.float32))
