"""The close's contributions in one pass over the updates (no shares, no d-sized model per candidate) equal
the candidate-by-candidate evaluation they replace, up to float32 rounding of the logits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from aggregator.round.compute import RoundInputs, compute_round
from aggregator.round.sharding import TOLERANCE
from aggregator.scoring import contribution
from aggregator.scoring.contribution import batched_contributions, leave_one_out, solo_gains, weighted_sum
from fedledger.models import ValidationBatch, evaluate, example_losses, init_mlp, init_softmax
from fedledger.payload import flatten, unflatten
from tests.aggregator.roundkit import NOW, Federation


def test_weighted_sum_is_the_sum_of_the_shares_to_float32_rounding() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2500)).astype(np.float32)
    c = rng.normal(size=100)
    exact = (c[:, None] * X.astype(np.float64)).sum(axis=0)
    got = weighted_sum(X, c)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())
    with pytest.raises(contribution.InvalidParameter, match="one coefficient per row"):
        weighted_sum(X, c[:4])


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_batched_contributions_equal_one_evaluation_per_candidate(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    weights = init_softmax(40, 4) if family == "softmax" else init_mlp(40, 16, 4, rng)
    spec = {name: list(t.shape) for name, t in weights.items()}
    base = flatten(weights, spec)
    Xv = rng.normal(size=(30, 40)).astype(np.float32)
    yv = rng.integers(0, 4, size=30)
    X = rng.normal(scale=0.2, size=(7, base.size)).astype(np.float32)
    X[3] = 0.0  # a zero update: no share, no solo step
    c = np.array([0.2, 0.1, 0.0, 0.3, 0.15, 0.05, 0.2])

    def loss_of(delta: np.ndarray) -> np.ndarray:
        return example_losses(unflatten(base + delta, spec), Xv, yv)

    loss_before = float(loss_of(np.zeros(base.size, np.float32)).mean())
    full, marginal, stderr = leave_one_out(loss_of, X, c)
    solo = solo_gains(loss_of, loss_before, X, 0.7)
    # Chunks of two rows, so the last chunk is partial.
    batch = ValidationBatch(weights, Xv, yv, spec)
    monkeypatch.setattr(contribution, "_CHUNK_BYTES", 2 * 8 * batch.base.size)
    monkeypatch.setattr(contribution, "_CHUNK_SHARE", 1)
    chunks: list[int] = []
    responses = ValidationBatch.responses
    monkeypatch.setattr(
        ValidationBatch, "responses", lambda self, rows: chunks.append(len(rows)) or responses(self, rows)
    )
    got = batched_contributions(batch, X, c, loss_before, 0.7)
    assert chunks == [1, 2, 2, 2, 1]  # the aggregate's, then the rows' in chunks of two
    assert got.full_loss == pytest.approx(full, rel=1e-6)
    np.testing.assert_allclose(got.marginal, marginal, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.stderr, stderr, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.solo_gain, solo, rtol=1e-4, atol=1e-7)
    assert marginal[2] == got.marginal[2] == 0.0 and got.stderr[3] == 0.0 and got.solo_gain[3] == 0.0
    assert (np.abs(got.marginal) > 1e-4).sum() >= 4  # the comparison is not between zeros


def _one_candidate_at_a_time(inputs: RoundInputs) -> RoundInputs:
    """The same round scored through a caller's evaluate: every candidate model built and run alone."""
    assert inputs.holdout is not None
    Xv, yv = inputs.holdout
    return replace(inputs, evaluate=lambda w: (example_losses(w, Xv, yv), evaluate(w, Xv, yv)[1]))


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("fltrust_guarded", {}),
        ("fltrust", {}),
        ("trimmed_mean", {}),
        ("multi_krum", {"byzantine_fraction": 0.3}),
        ("fedavg", {"rollback_threshold": 0.0}),
    ],
)
def test_a_close_decides_the_same_batched_or_one_candidate_at_a_time(
    strategy: str, extra: dict[str, object]
) -> None:
    fed = Federation(seed=5)
    honest = fed.honest(7)
    attackers = np.vstack([-3.0 * honest.mean(axis=0), 40.0 * honest[0]])
    reference = honest.mean(axis=0) + 0.01
    inputs = replace(
        fed.inputs(np.vstack([honest, attackers]), strategy=strategy, **extra),
        reference=reference.astype(np.float32),
        public_change=honest[2].copy(),
    )
    batched = compute_round(inputs, np.random.default_rng(1), NOW)
    single = compute_round(_one_candidate_at_a_time(inputs), np.random.default_rng(1), NOW)
    assert batched.status == single.status and batched.activate == single.activate
    assert batched.record is not None and single.record is not None
    assert batched.record.decision == single.record.decision
    assert batched.record.rolled_back == single.record.rolled_back
    assert batched.record.holdout_loss_after == pytest.approx(single.record.holdout_loss_after, rel=1e-6)
    assert batched.record.holdout_accuracy == single.record.holdout_accuracy
    np.testing.assert_array_equal(batched.aggregate, single.aggregate)
    for a, b in zip(batched.clients, single.clients, strict=True):
        assert (a.selected, a.kept, a.byzantine, a.evidence, a.excluded_reason) == (
            b.selected,
            b.kept,
            b.byzantine,
            b.evidence,
            b.excluded_reason,
        )
        # Quality is a difference of two validation losses (issue 20): the two evaluations agree on it to
        # float32 rounding of the logits, as the sharded close does (aggregator.round.sharding.TOLERANCE).
        points = TOLERANCE["score_points"]
        assert (a.quality, a.honesty, a.fitness) == pytest.approx(
            (b.quality, b.honesty, b.fitness), abs=points
        )
        assert a.reputation_after == pytest.approx(b.reputation_after, abs=points)
        assert a.reward_wei == pytest.approx(b.reward_wei, rel=TOLERANCE["reward_rtol"])


def test_a_close_allocates_a_small_fraction_of_the_updates() -> None:
    """No (n, d) temporary: the close's peak allocation stays under a quarter of the update matrix (the
    old scores built the shares as an n x d float64 product: 2x the updates)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    fed = Federation(seed=1)
    features, classes = 20_000, 3
    fed.weights = init_softmax(features, classes)
    fed.spec = {name: list(t.shape) for name, t in fed.weights.items()}
    Xv = rng.normal(size=(60, features)).astype(np.float32)
    fed.holdout = (Xv, rng.integers(0, classes, size=60))
    direction = rng.normal(scale=1e-3, size=features * classes + classes).astype(np.float32)
    deltas = (direction + rng.normal(scale=1e-3, size=(40, direction.size))).astype(np.float32)
    deltas[:4] *= -1.0
    inputs = replace(
        fed.inputs(deltas, strategy="fltrust_guarded"), reference=direction, public_change=direction * 2
    )
    compute_round(inputs, np.random.default_rng(1), NOW)  # warm-up: kernels, caches
    for measured in (inputs, _one_candidate_at_a_time(inputs)):
        tracemalloc.start()
        try:
            result = compute_round(measured, np.random.default_rng(1), NOW)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.record is not None
        assert peak < 0.25 * deltas.nbytes, (peak, deltas.nbytes)
