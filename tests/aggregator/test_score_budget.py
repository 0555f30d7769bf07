"""The per-row scores' budget (issue 25 item 2): a seeded subsample of the validation examples above it,
every example below it, the close's decision on every example always."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.round.compute import compute_round
from aggregator.scoring import budget, responses
from aggregator.scoring import round as round_module
from aggregator.scoring.budget import ScoreBudget, round_seed, score_sample, settings_budget
from aggregator.scoring.contribution import batched_contributions, leave_one_out
from aggregator.scoring.novelty import batched_novel_gains, nominal_coefficients, novel_gains
from aggregator.scoring.responses import response_measures
from aggregator.scoring.round import score_round
from aggregator.strategies.fltrust_guarded import gate
from fedledger.config import Settings
from fedledger.models import ValidationBatch, example_losses, init_mlp, init_softmax
from fedledger.payload import flatten, unflatten
from tests.aggregator.roundkit import NOW, OPENED, Federation


def test_the_budget_keeps_every_example_within_it_and_k_above_it() -> None:
    b = ScoreBudget(examples=32, floor=2e9)
    # n = 10, d = 650, 180 examples (the digits task): far below the floor.
    assert b.size(10, 650, 180) == 180
    # n = 100, d = 1M, 200 examples: 2e10 multiply-adds > max(32 x 1e8, 2e9).
    assert b.size(100, 1_000_000, 200) == 32
    # Within K examples: all of them, whatever the size.
    assert b.size(100, 10_000_000, 32) == 32
    assert b.size(100, 10_000_000, 20) == 20
    # The floor allows more than K where n x d is small: 2e9 / (10 x 1M) = 200.
    assert b.size(10, 1_000_000, 500) == 200
    assert ScoreBudget(4, 0.0).size(3, 10, 50) == 4
    with pytest.raises(InvalidParameter, match="at least 2 examples"):
        ScoreBudget(1, 0.0)
    with pytest.raises(InvalidParameter, match="cannot budget"):
        b.size(-1, 10, 10)


def test_the_subsample_is_deterministic_distinct_sorted_and_of_the_stated_size() -> None:
    updates = [(100 + i, OPENED + timedelta(seconds=i)) for i in range(5)]
    seed = round_seed(7, updates)
    drawn = score_sample(seed, 200, 32)
    assert drawn is not None and drawn.size == 32 and np.unique(drawn).size == 32
    assert (np.diff(drawn) > 0).all() and drawn.min() >= 0 and drawn.max() < 200
    again = score_sample(round_seed(7, list(updates)), 200, 32)
    assert again is not None and np.array_equal(drawn, again)
    # Another round, or another arrival time, draws other examples.
    other_round = score_sample(round_seed(8, updates), 200, 32)
    moved = [*updates[:4], (104, OPENED + timedelta(seconds=5))]
    other_time = score_sample(round_seed(7, moved), 200, 32)
    assert other_round is not None and other_time is not None
    assert not np.array_equal(drawn, other_round) and not np.array_equal(drawn, other_time)
    # Covering every example: no subsample.
    assert score_sample(seed, 32, 32) is None and score_sample(seed, 20, 32) is None
    # Uniform: over many seeds every example is drawn about size / examples of the time.
    counts = np.zeros(50)
    for r in range(2000):
        got = score_sample(round_seed(r, updates), 50, 10)
        assert got is not None
        counts[got] += 1
    assert np.abs(counts / 2000 - 0.2).max() < 0.05


def _scored_round(family: str, seed: int = 3):  # type: ignore[no-untyped-def]
    """A small round of a built-in model: base weights, layout, validation data, updates, reference."""
    rng = np.random.default_rng(seed)
    weights = init_softmax(30, 5) if family == "softmax" else init_mlp(30, 12, 5, rng)
    spec = {name: list(t.shape) for name, t in weights.items()}
    base = flatten(weights, spec)
    truth = rng.normal(size=(30, 5))
    Xv = rng.normal(size=(600, 30)).astype(np.float32)
    yv = (Xv @ truth).argmax(axis=1)
    reference = np.zeros(base.size, dtype=np.float32)
    reference[: 30 * 5] = (0.05 * truth).reshape(-1) if family == "softmax" else 0.0
    if family == "mlp":
        reference = rng.normal(scale=0.05, size=base.size).astype(np.float32)
    X = (reference + rng.normal(scale=0.05, size=(8, base.size))).astype(np.float32)
    X[6] = -2.0 * reference  # one update against the reference
    return weights, spec, base, Xv, yv, X, reference


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_the_responses_space_equals_the_chunked_functions(family: str) -> None:
    """response_measures derives every candidate from the rows' responses; the chunked functions build
    residuals in d first: equal up to float32 rounding of the logits."""
    weights, spec, _, Xv, yv, X, reference = _scored_round(family)
    batch = ValidationBatch(weights, Xv[:50], yv[:50], spec)
    np.testing.assert_allclose(batch.stacked_responses(X), batch.responses(X), rtol=1e-4, atol=1e-5)
    c = np.array([0.2, 0.1, 0.0, 0.15, 0.15, 0.2, 0.0, 0.2])
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    k = nominal_coefficients(c, norms, np.full(8, 100.0), np.ones(8, dtype=bool))
    before = float(batch.losses(np.zeros_like(batch.base), np.zeros(batch.head_index.size)).mean())
    ref_norm = float(np.linalg.norm(reference))
    got = response_measures(batch, X, c, k, reference, before, ref_norm, norms)
    contributions = batched_contributions(batch, X, c, before, ref_norm, norms)
    novel, novel_se = batched_novel_gains(batch, X, c, k, reference)
    context, _ = batched_novel_gains(batch, X, c, k, reference, residual=False)
    for mine, theirs in [
        (got.marginal, contributions.marginal),
        (got.stderr, contributions.stderr),
        (got.solo_gain, contributions.solo_gain),
        (got.novel, novel),
        (got.novel_stderr, novel_se),
        (got.context, context),
    ]:
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-6)
    assert (np.abs(got.novel) > 1e-4).sum() >= 4  # not a comparison of zeros
    if family == "softmax":  # the reference follows the labels' rule: the update against it harms
        assert got.context[6] < 0 < got.context[0]


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_a_subsample_estimates_the_exact_scores_within_their_standard_error(family: str) -> None:
    """Over 20 rounds' subsamples of 60 of 600 examples, the novel gains and marginals of the subsample
    fall within two of their own standard errors of the exact (all examples) values about as often as an
    unbiased estimate does, and their errors average about zero."""
    weights, spec, base, Xv, yv, X, reference = _scored_round(family)
    batch = ValidationBatch(weights, Xv, yv, spec)
    n = X.shape[0]
    selected = np.arange(n)
    coefficients = np.full(n, 1.0 / n)
    common = (X, reference, coefficients, selected, np.zeros(n), 1.0)

    def loss_of(delta: np.ndarray) -> np.ndarray:
        return example_losses(unflatten(base + delta, spec), Xv, yv)

    exact = score_round(loss_of, *common, batch=batch, claims=np.full(n, 100.0))
    assert exact.examples == exact.examples_used == 600
    z: list[float] = []
    for r in range(20):
        seed = round_seed(r, [])
        estimate = score_round(
            loss_of,
            *common,
            batch=batch,
            claims=np.full(n, 100.0),
            sample=lambda m, seed=seed: score_sample(seed, m, 60),
        )
        assert estimate.examples == 600 and estimate.examples_used == 60
        assert estimate.loss_before == exact.loss_before  # the record's loss is the whole set's
        assert estimate.novel_gain is not None and exact.novel_gain is not None
        assert estimate.novel_stderr is not None
        for got, truth, se in [
            (estimate.novel_gain, exact.novel_gain, estimate.novel_stderr),
            (estimate.marginal, exact.marginal, estimate.marginal_stderr),
        ]:
            ok = se > 0
            z.extend(((got[ok] - truth[ok]) / se[ok]).tolist())
    zs = np.array(z)
    assert zs.size >= 200
    # A subsample without replacement of a tenth: |z| <= 2 about 96 % of the time (a little more than a
    # normal's 95 %: the finite population correction sqrt(1 - 60/600) narrows the true spread).
    assert np.mean(np.abs(zs) <= 2.0) >= 0.88
    assert abs(float(zs.mean())) < 0.35


def test_below_the_budget_a_close_scores_every_example_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default budget leaves a small round exact: the same scores as a close with no budget at all
    (bit for bit), every example recorded as used."""
    fed = Federation(seed=4)
    honest = fed.honest(7)
    inputs = replace(
        fed.inputs(np.vstack([honest, -3.0 * honest.mean(axis=0)])),
        reference=honest.mean(axis=0).astype(np.float32),
    )
    default = compute_round(inputs, np.random.default_rng(1), NOW)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 1e30)
    unbounded = compute_round(inputs, np.random.default_rng(1), NOW)
    assert default.record is not None and unbounded.record is not None
    assert default.record.params["score_examples"] == default.record.params["validation_examples"] > 32
    for a, b in zip(default.clients, unbounded.clients, strict=True):
        assert (a.quality, a.honesty, a.fitness, a.reward_wei) == (
            b.quality,
            b.honesty,
            b.fitness,
            b.reward_wei,
        )


def test_above_the_budget_the_scores_subsample_and_the_decision_keeps_every_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed = Federation(seed=4)
    honest = fed.honest(7)
    inputs = replace(
        fed.inputs(np.vstack([honest, -3.0 * honest.mean(axis=0)])),
        reference=honest.mean(axis=0).astype(np.float32),
    )
    exact = compute_round(inputs, np.random.default_rng(1), NOW)
    monkeypatch.setattr(budget, "SCORE_EXAMPLES", 40)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    sampled = compute_round(inputs, np.random.default_rng(1), NOW)
    again = compute_round(inputs, np.random.default_rng(1), NOW)
    assert exact.record is not None and sampled.record is not None and again.record is not None
    assert sampled.record.params["score_examples"] == 40
    assert sampled.record.params["validation_examples"] == exact.record.params["validation_examples"] > 40
    # The decision is not a per-row score: the same step, model and validation loss.
    assert sampled.record.decision == exact.record.decision
    assert sampled.record.holdout_loss_after == exact.record.holdout_loss_after
    assert sampled.record.holdout_loss_before == exact.record.holdout_loss_before
    assert sampled.step == exact.step
    # The scores are an estimate (they move), the same for the same round, and the attacker stays flagged.
    assert [c.quality for c in sampled.clients] == [c.quality for c in again.clients]
    assert [c.quality for c in sampled.clients] != [c.quality for c in exact.clients]
    assert sampled.clients[-1].byzantine and exact.clients[-1].byzantine


def test_the_rules_inner_products_stand_in_for_the_scores_passes() -> None:
    """Above the budget the guarded rule's Gram matrix, norms and dots replace the scores' own passes: the
    same scores to float32 rounding."""
    weights, spec, base, Xv, yv, X, reference = _scored_round("softmax")
    batch = ValidationBatch(weights, Xv, yv, spec)
    n = X.shape[0]
    products = gate(X, reference).products
    assert products is not None

    def loss_of(delta: np.ndarray) -> np.ndarray:
        return example_losses(unflatten(base + delta, spec), Xv, yv)

    args = (loss_of, X, reference, np.full(n, 1.0 / n), np.arange(n), np.zeros(n), 1.0)
    seed = round_seed(1, [])
    kwargs = {"batch": batch, "claims": np.full(n, 100.0), "sample": lambda m: score_sample(seed, m, 50)}
    own = score_round(*args, **kwargs)  # type: ignore[arg-type]
    reused = score_round(*args, **kwargs, products=products)  # type: ignore[arg-type]
    for name in ("quality", "honesty", "cosine", "norms", "marginal", "solo_gain", "novel_gain"):
        np.testing.assert_allclose(getattr(reused, name), getattr(own, name), rtol=1e-4, atol=1e-6)
    assert np.array_equal(reused.evidence, own.evidence) and own.evidence[6]
    with pytest.raises(InvalidParameter, match="inner products"):
        score_round(*args, **kwargs, products=gate(X[:4], reference).products)  # type: ignore[arg-type]


def test_responses_too_large_to_hold_fall_back_to_the_chunked_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When every row's responses would not fit the memory bound, the subsample is scored by the chunked
    functions on the subsample's batch: the same estimate to float32 rounding."""
    weights, spec, base, Xv, yv, X, reference = _scored_round("mlp")
    batch = ValidationBatch(weights, Xv, yv, spec)
    n = X.shape[0]

    def loss_of(delta: np.ndarray) -> np.ndarray:
        return example_losses(unflatten(base + delta, spec), Xv, yv)

    args = (loss_of, X, reference, np.full(n, 1.0 / n), np.arange(n), np.zeros(n), 1.0)
    seed = round_seed(2, [])
    kwargs = {"batch": batch, "claims": np.full(n, 100.0), "sample": lambda m: score_sample(seed, m, 50)}
    held = score_round(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(responses, "_FLOOR_BYTES", 0)
    monkeypatch.setattr(responses, "_SHARE", 10**9)
    calls: list[int] = []
    measures = responses.response_measures
    monkeypatch.setattr(
        round_module, "response_measures", lambda *a, **k: calls.append(1) or measures(*a, **k)
    )
    chunked = score_round(*args, **kwargs)  # type: ignore[arg-type]
    assert calls == [] and chunked.examples_used == held.examples_used == 50
    for name in ("quality", "marginal", "marginal_stderr", "solo_gain", "novel_gain"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(held, name), rtol=1e-3, atol=1e-6)


def test_the_settings_set_the_workers_budget() -> None:
    """The settings' defaults are the module's; a worker's settings give the budget its closes carry with
    the round's inputs (nothing set on the process), and a budget that cannot work is refused."""
    settings = Settings()
    assert (
        settings_budget(settings)
        == budget.default_budget()
        == ScoreBudget(budget.SCORE_EXAMPLES, budget.SCORE_WORK_FLOOR)
    )
    chosen = settings_budget(settings.model_copy(update={"score_examples": 8, "score_work_floor": 0.0}))
    assert chosen == ScoreBudget(8, 0.0)
    fed = Federation(seed=4)
    inputs = fed.inputs(fed.honest(6))
    assert inputs.score_sample(150) is None  # the defaults: every example at this size
    sampled = replace(inputs, score_budget=chosen).score_sample(150)
    assert sampled is not None and sampled.size == 8
    assert budget.default_budget() == ScoreBudget(32, 2e9)  # the module's defaults did not move
    with pytest.raises(InvalidParameter, match="at least 2 examples"):
        ScoreBudget(1, 0.0)
    with pytest.raises(ValueError, match="score_examples"):
        Settings(score_examples=1)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_the_references_part_of_the_aggregate_is_in_every_candidate_and_nobodys_share(family: str) -> None:
    """With the server's reference as a member of the aggregate (a = sum_i c_i x_i + c_ref g), every path
    of the per-row measures holds c_ref g in each candidate: the leave-one-out marginals and context gains
    are those of a round in which the reference were one more row with coefficient c_ref, the solo gains
    do not move, and the loss-callable, batched and responses-space paths agree."""
    weights, spec, base, Xv, yv, X, reference = _scored_round(family)
    batch = ValidationBatch(weights, Xv[:80], yv[:80], spec)
    c = np.array([0.2, 0.1, 0.0, 0.15, 0.15, 0.2, 0.0, 0.2]) * 0.8
    ref_norm = float(np.linalg.norm(reference))
    c_ref = 0.2 * float(np.median(np.linalg.norm(X, axis=1))) / ref_norm
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    k = nominal_coefficients(c, norms, np.full(8, 100.0), np.ones(8, dtype=bool))
    before = float(batch.losses(np.zeros_like(batch.base), np.zeros(batch.head_index.size)).mean())
    offset = (np.float32(c_ref) * reference).astype(np.float32)

    def loss_of(delta: np.ndarray) -> np.ndarray:
        return example_losses(unflatten(base + delta, spec), Xv[:80], yv[:80])

    # The oracle: the reference as a ninth row; rows 0-7 are what the scores value.
    Xr, cr = np.vstack([X, reference[None, :]]), np.append(c, c_ref)
    _, oracle_marginal, _ = leave_one_out(loss_of, Xr, cr)
    oracle_context, _ = novel_gains(loss_of, Xr, cr, np.append(k, 0.0), reference, residual=False)
    _, marginal, _ = leave_one_out(loss_of, X, c, offset)
    context, _ = novel_gains(loss_of, X, c, k, reference, residual=False, offset=offset)
    np.testing.assert_allclose(marginal, oracle_marginal[:8], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(context, oracle_context[:8], rtol=1e-4, atol=1e-7)
    _, without, _ = leave_one_out(loss_of, X, c)
    assert np.abs(marginal - without).max() > 1e-4  # the reference's part changes what a row is worth

    batched = batched_contributions(batch, X, c, before, ref_norm, norms, offset)
    novel, novel_se = novel_gains(loss_of, X, c, k, reference, offset=offset)
    b_novel, b_novel_se = batched_novel_gains(batch, X, c, k, reference, offset=offset)
    b_context, _ = batched_novel_gains(batch, X, c, k, reference, residual=False, offset=offset)
    spaced = response_measures(batch, X, c, k, reference, before, ref_norm, norms, None, c_ref)
    plain = batched_contributions(batch, X, c, before, ref_norm, norms)
    for mine, theirs in [
        (batched.marginal, marginal),
        (spaced.marginal, marginal),
        (b_context, context),
        (spaced.context, context),
        (b_novel, novel),
        (spaced.novel, novel),
        (b_novel_se, novel_se),
        (spaced.solo_gain, plain.solo_gain),
        (batched.solo_gain, plain.solo_gain),
    ]:
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-6)

    # Through score_round, exact and above the budget (the responses space on a subsample, the rule's
    # inner products in place of the scores' passes): the same marginals as the oracle's paths give.
    args = (loss_of, X, reference, c, np.flatnonzero(c), np.zeros(8), 1.0)
    exact = score_round(*args, batch=batch, claims=np.full(8, 100.0), reference_coefficient=c_ref)  # type: ignore[arg-type]
    np.testing.assert_allclose(exact.marginal, marginal, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(exact.solo_gain, plain.solo_gain, rtol=1e-3, atol=1e-6)
    seed = round_seed(4, [])
    chosen = score_sample(seed, 80, 40)
    assert chosen is not None
    sub = score_round(
        *args,  # type: ignore[arg-type]
        batch=batch,
        claims=np.full(8, 100.0),
        sample=lambda m: score_sample(seed, m, 40),
        products=gate(X, reference).products,
        reference_coefficient=c_ref,
    )
    _, sub_marginal, _ = leave_one_out(lambda d: loss_of(d)[chosen], X, c, offset)
    np.testing.assert_allclose(sub.marginal, sub_marginal, rtol=1e-3, atol=1e-6)
    with pytest.raises(InvalidParameter, match="reference coefficient needs"):
        score_round(loss_of, X, None, c, np.flatnonzero(c), np.zeros(8), 1.0, reference_coefficient=c_ref)


@pytest.mark.parametrize("family", ["softmax", "mlp"])
def test_the_responses_space_follows_the_novelty_basis(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the other rows' aggregate (novelty.NOVELTY_BASIS "aggregate", the default) the responses space and the
    chunked functions still agree, and they differ from the novel gains against every other row."""
    from aggregator.scoring import novelty

    weights, spec, _, Xv, yv, X, reference = _scored_round(family)
    batch = ValidationBatch(weights, Xv[:50], yv[:50], spec)
    c = np.array([0.2, 0.1, 0.0, 0.15, 0.15, 0.2, 0.0, 0.2])
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    k = nominal_coefficients(c, norms, np.full(8, 100.0), np.ones(8, dtype=bool))
    before = float(batch.losses(np.zeros_like(batch.base), np.zeros(batch.head_index.size)).mean())
    ref_norm = float(np.linalg.norm(reference))
    monkeypatch.setattr(novelty, "NOVELTY_BASIS", "rows")
    by_rows, _ = batched_novel_gains(batch, X, c, k, reference)
    monkeypatch.setattr(novelty, "NOVELTY_BASIS", "aggregate")
    got = response_measures(batch, X, c, k, reference, before, ref_norm, norms)
    novel, novel_se = batched_novel_gains(batch, X, c, k, reference)
    np.testing.assert_allclose(got.novel, novel, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got.novel_stderr, novel_se, rtol=1e-3, atol=1e-6)
    assert np.abs(novel - by_rows).max() > 1e-4
