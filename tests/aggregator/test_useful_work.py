"""Reference-anchored scores: holdout split, marginal contributions, quality, honesty, timeliness, evidence,
and the continuous reward multiplier."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import InvalidParameter
from aggregator.scoring.contribution import leave_one_out, solo_gains, split_holdout
from aggregator.scoring.reputation import ReputationConfig, direction_evidence, norm_evidence
from aggregator.scoring.scores import (
    ScoringConfig,
    contribution_quality,
    fitness_multiplier,
    reference_honesty,
    significance_z,
    window_timeliness,
)

TIERS = ScoringConfig().reward_tiers


def quadratic_loss(target: np.ndarray):
    """Loss of the model 'delta' as its squared distance to a target step, plus 1 (always positive)."""
    return lambda delta: 1.0 + float(np.sum((delta.astype(np.float64) - target) ** 2))


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    y = np.repeat(np.arange(10), 36)
    X = np.arange(len(y), dtype=np.float32)[:, None]
    (Xr, yr), (Xv, yv) = split_holdout(X, y, 0.5, seed=3)
    assert len(Xr) + len(Xv) == len(y)
    assert not set(Xr[:, 0].tolist()) & set(Xv[:, 0].tolist())
    assert np.bincount(yr).tolist() == [18] * 10 and np.bincount(yv).tolist() == [18] * 10
    (Xr2, _), _ = split_holdout(X, y, 0.5, seed=3)
    np.testing.assert_array_equal(Xr, Xr2)
    # A class with two examples has one on each side even at an extreme fraction.
    (_, yr3), (_, yv3) = split_holdout(np.zeros((4, 1)), np.array([0, 0, 1, 1]), 0.9, seed=0)
    assert sorted(yr3.tolist()) == [0, 1] and sorted(yv3.tolist()) == [0, 1]
    with pytest.raises(InvalidParameter, match="root_fraction"):
        split_holdout(X, y, 1.0, 0)


def test_leave_one_out_credits_useful_shares_and_blames_harmful_ones() -> None:
    target = np.ones(4)
    # Shares c_i x_i: 0.25, 0.25, 0 (no weight: a zero coefficient) and -0.25 per coordinate.
    X = np.array([[1.0] * 4, [0.5] * 4, [3.0] * 4, [-0.5] * 4], np.float32)
    full, m, se = leave_one_out(quadratic_loss(target), X, np.array([0.25, 0.5, 0.0, 0.5]))
    # A loss function that gives only the mean loss: no standard errors.
    assert not se.any()
    # Aggregate 0.25 per coordinate: loss 1 + 4 * 0.75^2.
    assert full == pytest.approx(1 + 4 * 0.75**2)
    assert m[0] == pytest.approx(m[1]) and m[0] > 0
    assert m[2] == 0.0 and m[3] < 0
    # Exactly: without share 0 the aggregate is 0 (loss 5); without share 3 it is 0.5 (loss 2).
    assert m[0] == pytest.approx(5 - full) and m[3] == pytest.approx(2 - full)


def test_leave_one_out_marks_a_share_that_makes_the_model_diverge() -> None:
    def loss(delta: np.ndarray) -> float:
        return float("inf") if np.abs(delta).max() > 10 else 1.0

    _, m, _ = leave_one_out(loss, np.array([[0.1, 0.1], [100.0, 0.0]], np.float32), np.ones(2))
    assert m[1] == -np.inf and m[0] == 0.0


def test_leave_one_out_standard_errors_come_from_per_example_losses() -> None:
    rng = np.random.default_rng(4)
    examples = rng.normal(size=(200, 3))

    def per_example(delta: np.ndarray) -> np.ndarray:
        # Squared error of a linear model "delta" on targets 1: one loss per example.
        return (examples @ delta.astype(np.float64) - 1.0) ** 2

    X = np.array([[0.6, 0.2, 0.0], [1.0, -1.0, 2.0], [-0.1, 0.2, 0.05]], np.float32)
    c = np.array([0.5, 0.0, 2.0])
    full, m, se = leave_one_out(per_example, X, c)
    shares = (c[:, None] * X).astype(np.float32)
    total = shares.sum(axis=0)
    assert full == pytest.approx(per_example(total).mean())
    for i in (0, 2):
        diff = per_example(total - shares[i]) - per_example(total)
        assert m[i] == pytest.approx(diff.mean())
        assert se[i] == pytest.approx(diff.std(ddof=1) / np.sqrt(len(diff)))
    # A share of zero moved nothing: no contribution and no uncertainty about it.
    assert m[1] == 0.0 and se[1] == 0.0


def test_solo_gains_rescale_to_the_reference_norm() -> None:
    target = np.array([1.0, 0.0])
    loss = quadratic_loss(target)
    X = np.array([[1000.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 3.0]], np.float32)
    gains = solo_gains(loss, loss(np.zeros(2, np.float32)), X, scale_to=1.0)
    np.testing.assert_allclose(gains, [1.0, -3.0, 0.0, -1.0])
    with pytest.raises(InvalidParameter, match="positive norm"):
        solo_gains(loss, 2.0, X, 0.0)


def test_quality_is_relative_to_the_median_contribution_not_a_rank() -> None:
    q = contribution_quality([0.02, 0.01, 0.01, 0.0, -0.01], loss=1.0, share=1.0, floor=0.0)
    np.testing.assert_allclose(q, [100, 100, 100, 0, 0])
    # Clients doing the same work score the same however many there are.
    assert set(contribution_quality([0.01] * 30, 1.0).tolist()) == {100.0}
    half = contribution_quality([0.02, 0.01, 0.005], 1.0, share=1.0, floor=0.0)
    np.testing.assert_allclose(half, [100, 100, 50])


def test_quality_of_a_converged_round_does_not_rank_noise() -> None:
    noise = np.array([3e-7, -2e-7, 1e-7, 0.0, -4e-7])
    q = contribution_quality(noise, loss=0.2, floor=1e-4)
    assert q.min() > 95
    # A clearly harmful client in that round still scores 0.
    assert contribution_quality(np.append(noise, -0.01), 0.2)[-1] == 0.0


def test_quality_does_not_rank_differences_within_their_standard_errors() -> None:
    m = [0.02, 0.02, 0.02, -0.01, -0.01]
    se = [0.001, 0.001, 0.001, 0.01, 0.001]
    q = contribution_quality(m, loss=1.0, share=0.25, floor=0.0, stderr=se, z=2.0)
    # -0.01 +- 0.01 is not significantly below 0.25 x the median 0.02; -0.01 +- 0.001 is harmful.
    np.testing.assert_allclose(q, [100, 100, 100, 100, 0])
    # Without standard errors the same contributions are ranked as before.
    assert contribution_quality(m, loss=1.0, share=0.25, floor=0.0)[3] == 0.0
    with pytest.raises(InvalidParameter, match="standard error"):
        contribution_quality(m, 1.0, stderr=[0.1])
    with pytest.raises(InvalidParameter, match="standard error"):
        contribution_quality([0.1], 1.0, stderr=[-0.1])


def test_significance_is_family_wise_over_the_round() -> None:
    assert significance_z(0.05, 1) == pytest.approx(1.6449, abs=1e-4)
    # Ten clients tested each round: each at 0.005, one-sided.
    assert significance_z(0.05, 10) == pytest.approx(2.5758, abs=1e-4)
    assert significance_z(0.05, 30) > significance_z(0.05, 10)
    with pytest.raises(InvalidParameter):
        significance_z(0.0, 10)
    with pytest.raises(InvalidParameter):
        significance_z(0.05, 0)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=40),
    st.floats(0.01, 10.0),
    st.integers(0, 2**32 - 1),
)
def test_quality_is_bounded_monotone_and_order_free(m: list[float], loss: float, seed: int) -> None:
    q = contribution_quality(m, loss)
    assert ((q >= 0) & (q <= 100)).all()
    order = np.argsort(m, kind="stable")
    assert (np.diff(q[order]) >= -1e-9).all()
    perm = np.random.default_rng(seed).permutation(len(m))
    np.testing.assert_allclose(contribution_quality(np.asarray(m)[perm], loss), q[perm])


def test_honesty_follows_the_reference_direction_and_a_plausible_norm() -> None:
    cos = np.array([0.8, 0.6, 0.4, 0.1, -0.5, 0.7])
    norms = np.array([1.0, 1.2, 0.9, 1.0, 1.0, 100.0])
    h = reference_honesty(cos, norms, share=0.5)
    # median cosine 0.5 -> 0.25 earns full credit; 0.1 earns 40; pointing away earns 0; 100x norm earns 0.
    np.testing.assert_allclose(h[:5], [100, 100, 100, 40, 0])
    assert h[5] == 0.0
    # Scale of the whole round does not matter.
    np.testing.assert_allclose(reference_honesty(cos, norms * 1e6, share=0.5), h)
    # A norm between the tolerance and the cutoff gets partial credit.
    partial = reference_honesty([0.5, 0.5, 0.5], [1.0, 1.0, np.sqrt(30.0)])[2]
    assert 0 < partial < 100
    with pytest.raises(InvalidParameter, match="cosines"):
        reference_honesty([1.5], [1.0])


def test_honesty_gives_partial_credit_above_the_cosine_floor() -> None:
    # median 0.4 -> full credit from 0.1; floor -0.2: cosine 0 earns 2/3, -0.2 and below 0.
    h = reference_honesty([0.4, 0.4, 0.4, 0.4, 0.0, -0.2, -0.5], [1.0] * 7, cosine_floor=-0.2)
    np.testing.assert_allclose(h, [100, 100, 100, 100, 200 / 3, 0, 0])


def test_honesty_allows_the_rounds_own_scatter_of_cosines() -> None:
    # Honest non-IID updates scatter around the reference: spread 1.4826 x MAD = 1.4826 x 0.2.
    cos = [0.6, 0.4, 0.2, 0.0, -0.1, 0.3, 0.5]
    strict = reference_honesty(cos, [1.0] * 7, cosine_floor=-0.2)
    tolerant = reference_honesty(cos, [1.0] * 7, cosine_floor=-0.2, z=2.0)
    assert strict[4] < 100 and tolerant[4] == 100.0
    # Pointing away by far more than the scatter still earns nothing.
    assert reference_honesty([*cos, -0.95], [1.0] * 8, cosine_floor=-0.2, z=2.0)[-1] == 0.0
    with pytest.raises(InvalidParameter, match="spread"):
        reference_honesty(cos, [1.0] * 7, z=-1.0)


def test_honesty_when_the_round_disagrees_with_the_reference() -> None:
    np.testing.assert_allclose(reference_honesty([-0.2, -0.1, 0.05], [1, 1, 1]), [0, 0, 100])


def test_timeliness_has_no_bonus_for_arriving_first() -> None:
    np.testing.assert_allclose(window_timeliness([0, 50, 100, 101], deadline=100), [100, 100, 100, 50])
    with pytest.raises(InvalidParameter):
        window_timeliness([0], 1, late_score=120)


def test_evidence_needs_both_reference_signals() -> None:
    # Seven clients agreeing with the reference (cosines 0.4-0.5) and three pointing away.
    cos = [0.45, 0.4, 0.5, 0.42, 0.48, 0.44, 0.46, -0.3, -0.3, 0.2]
    gain = [0.1] * 7 + [0.05, -0.02, -0.2]
    # Only the client that points away from the reference AND harms the validation loss alone.
    assert np.flatnonzero(direction_evidence(cos, gain)).tolist() == [8]
    # Client 9 (cosine 0.2, harmful alone) is an outlier of the round too: with a cosine bar above it,
    # it is evidence as well.
    config = ReputationConfig(evidence_cosine_below=0.3)
    assert np.flatnonzero(direction_evidence(cos, gain, config)).tolist() == [8, 9]
    # Harm below the floor (a fraction of the loss) is noise, not evidence.
    assert not direction_evidence(cos, gain, loss=100.0).any()
    # A boosted update (20x the round's median norm) is evidence whatever its direction; an honest spike
    # of 13x the median (measured after a 4x validated step) is not.
    norms = [1.0, 1.2, 0.9, 1.0, 1.1, 1.0, 0.95, 1.0, 13.0, 25.0]
    assert np.flatnonzero(direction_evidence(cos, gain) | norm_evidence(norms)).tolist() == [8, 9]
    with pytest.raises(InvalidParameter):
        direction_evidence([0.1], [0.1, 0.2])
    with pytest.raises(InvalidParameter, match="evidence_outlier_z"):
        ReputationConfig(evidence_outlier_z=-1.0)


def test_evidence_does_not_punish_a_round_of_widely_scattered_honest_updates() -> None:
    # Very non-IID honest data: cosines to the reference from -0.3 to 0.8 and single-class updates that
    # hurt the balanced validation data alone. Pointing away by less than the round's scatter is not evidence.
    cos = [0.8, 0.5, 0.3, 0.1, -0.05, -0.25, 0.6, 0.2, -0.3, 0.4]
    gain = [0.1, 0.05, 0.02, -0.1, -0.2, -0.3, 0.1, 0.0, -0.4, 0.05]
    assert not direction_evidence(cos, gain).any()
    # The same cosine far outside a tight round is evidence.
    tight = [0.45, 0.4, 0.5, 0.42, 0.48, 0.44, 0.46, 0.43, -0.3, 0.41]
    assert np.flatnonzero(direction_evidence(tight, gain)).tolist() == [8]


def test_reward_multiplier_is_linear_between_tiers() -> None:
    assert fitness_multiplier(100, TIERS) == 2.0
    assert fitness_multiplier(90, TIERS) == 2.0
    assert fitness_multiplier(85, TIERS) == pytest.approx(1.75)
    assert fitness_multiplier(60, TIERS) == 0.5
    assert fitness_multiplier(59.99, TIERS) == 0.0
    assert fitness_multiplier(50, ()) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.floats(60.0, 100.0), st.floats(0.0, 0.5))
def test_reward_multiplier_is_monotone_and_continuous_above_the_lowest_tier(f: float, step: float) -> None:
    lo, hi = fitness_multiplier(f, TIERS), fitness_multiplier(min(f + step, 100.0), TIERS)
    assert lo <= hi <= lo + step * 0.05 + 1e-12  # slope at most 0.5 / 10 points


def test_score_round_credits_useful_updates_and_finds_evidence_against_the_reference() -> None:
    from aggregator.scoring.round import score_round
    from aggregator.strategies.fltrust import fltrust_coefficients

    rng = np.random.default_rng(0)
    target = rng.standard_normal(60)
    loss = quadratic_loss(target)
    # The server's root data shows the last 12 coordinates of the target; each organization's data shows a
    # block of 8 only it has, and some of the server's: quality is what an update adds beyond the others and
    # the reference (issue 20), honesty its agreement with the reference.
    reference = np.zeros(60, dtype=np.float32)
    reference[48:] = 0.3 * target[48:]
    own = np.zeros((6, 60))
    for i in range(6):
        own[i, 8 * i : 8 * i + 8] = 0.3 * target[8 * i : 8 * i + 8]
    honest = (reference + own + 0.02 * rng.standard_normal((6, 60))).astype(np.float32)
    attackers = -5.0 * (reference + 0.05 * rng.standard_normal((2, 60)))
    X = np.vstack([honest, attackers]).astype(np.float32)
    s = score_round(
        loss,
        X,
        reference,
        fltrust_coefficients(X, reference),
        np.arange(8),
        np.array([10.0] * 7 + [400.0]),
        deadline=300.0,
    )
    assert s.evidence.tolist() == [False] * 6 + [True, True]
    assert (s.quality[:6] == 100).all() and (s.honesty[:6] == 100).all()
    assert (s.honesty[6:] == 0).all() and (s.quality[6:] < 50).all()
    assert s.timeliness.tolist() == [100.0] * 7 + [50.0]
    assert (s.marginal[:6] > 0).all() and (s.marginal[6:] == 0).all()  # FLTrust gave them no weight
    # Without coefficients (a coordinate-wise rule) the selected clients share the mean.
    s2 = score_round(loss, X, reference, None, np.arange(6), np.zeros(8), 300.0)
    assert (s2.marginal[6:] == 0).all() and (s2.quality[:6] == 100).all()
    # Without a reference the coordinate median stands in.
    assert score_round(loss, X, None, None, np.arange(6), np.zeros(8), 300.0).evidence[6:].all()


def test_half_the_round_cannot_move_honesty_past_what_the_server_knows() -> None:
    """Issue 20, 50 % attackers: the round's median cosine and median norm are the attackers' to set when
    they are half the round. Five rows at cosine 0.5 raise the full-credit cosine (share x median) above
    honest late-round cosines; five near-zero rows drag the median norm down until honest norms look
    inflated. Capped at cosine 0 (not pointing away from the reference) and floored at the server's
    reference norm, honest rows keep full honesty; the attackers' rows gain nothing they did not have."""
    honest_cos = [0.02, 0.05, 0.08, 0.1, 0.0]
    cos = np.array(honest_cos + [0.5] * 5)
    norms = np.ones(10)
    # (z = 0: the spread allowance, which five rows far from the honest ones widen, left aside.)
    moved = reference_honesty(cos, norms, share=0.5, cosine_floor=-0.2)
    assert (moved[:5] < 100).all()
    held = reference_honesty(cos, norms, share=0.5, cosine_floor=-0.2, full_cap=0.0)
    np.testing.assert_allclose(held, 100.0)
    # Pointing away from the reference still costs credit under the cap.
    away = reference_honesty([*honest_cos, -0.5], [1.0] * 6, cosine_floor=-0.2, full_cap=0.0)
    assert away[-1] == 0.0
    honest_norms = [1.0, 1.5, 2.0, 2.5, 3.0]
    norms = np.array(honest_norms + [1e-3] * 5)
    cos = np.full(10, 0.1)
    dragged = reference_honesty(cos, norms)
    assert dragged[3] < 100 and dragged[4] < 100
    floored = reference_honesty(cos, norms, norm_floor=1.0)
    np.testing.assert_allclose(floored[:5], 100.0)
    # A boosted row is still judged against the larger of the two.
    assert reference_honesty([0.1] * 6, [1.0] * 5 + [100.0], norm_floor=1.0)[-1] == 0.0
