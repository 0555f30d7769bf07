"""Differential privacy (clipping, noise, accountant, budget refusal) and the rollback decision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregator.errors import PrivacyBudgetExceeded
from aggregator.round.dp import (
    PrivacyAccountant,
    clip_rows,
    clip_rows_in_place,
    gaussian_noise_std,
    private_mean,
)
from fedledger.privacy import (
    InvalidPrivacyParameter,
    epsilon_after,
    epsilon_of,
    gaussian_rdp,
    rdp_to_epsilon,
)

ORDERS = np.concatenate([np.linspace(1.02, 2.0, 50), np.linspace(2.05, 64, 1240), [128, 256, 512, 1024]])


@pytest.mark.parametrize("z", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("rounds", [1, 10, 100, 1000])
@pytest.mark.parametrize("delta", [1e-5, 1e-8])
def test_full_participation_epsilon_matches_the_gaussian_closed_form(
    z: float, rounds: int, delta: float
) -> None:
    closed_form = rdp_to_epsilon(ORDERS, rounds * gaussian_rdp(z, ORDERS), delta)
    assert epsilon_after(z, 1.0, rounds, delta) == pytest.approx(closed_form, rel=0.01)


def test_epsilon_grows_with_rounds_and_sampling_and_shrinks_with_noise() -> None:
    base = epsilon_after(1.0, 0.1, 100, 1e-5)
    assert epsilon_after(1.0, 0.1, 200, 1e-5) > base
    assert epsilon_after(1.0, 0.5, 100, 1e-5) > base
    assert epsilon_after(2.0, 0.1, 100, 1e-5) < base
    assert epsilon_after(1.0, 0.1, 0, 1e-5) == 0.0
    assert math.isinf(epsilon_after(0.0, 0.1, 1, 1e-5))
    with pytest.raises(InvalidPrivacyParameter, match="delta"):
        epsilon_after(1.0, 0.1, 1, 1.0)


def test_accountant_refuses_the_round_that_would_exceed_the_budget() -> None:
    accountant = PrivacyAccountant(noise_multiplier=1.0, sampling_rate=1.0, delta=1e-5, epsilon_budget=10.0)
    charged = 0
    while True:
        try:
            accountant = accountant.charge()
            charged += 1
        except PrivacyBudgetExceeded as refused:
            assert "over the governed budget 10.0000" in str(refused)
            break
    assert accountant.rounds_spent == charged
    assert accountant.epsilon_spent <= 10.0 < accountant.epsilon_if_charged()
    # z = 1, q = 1, delta = 1e-5: by hand, min over alpha of T alpha / 2 + log(1 - 1/alpha) - log(delta alpha)
    # / (alpha - 1) is about 9.0 for T = 3 and 10.7 for T = 4.
    assert charged == 3


def test_clipping_bounds_every_norm_and_leaves_small_updates_alone() -> None:
    X = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float32)
    clipped, norms = clip_rows(X, 1.0)
    np.testing.assert_allclose(norms, [5.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)


def test_private_mean_adds_noise_of_the_calibrated_size() -> None:
    rng = np.random.default_rng(0)
    X = np.zeros((10, 200_000), dtype=np.float32)
    result = private_mean(X, clip_norm=2.0, noise_multiplier=1.5, rng=rng)
    assert result.noise_std == gaussian_noise_std(2.0, 1.5, 10) == pytest.approx(0.3)
    assert result.aggregate.std() == pytest.approx(0.3, rel=0.01)
    assert result.clipped == 0


def test_rounds_at_differing_multipliers_compose_like_their_rdp_sum() -> None:
    # Gaussian RDP adds up over rounds: alpha / 2 x sum of 1 / z_i^2.
    rounds = [(1.0, 2), (1.5, 1), (3.0, 4)]
    rdp = sum(count * gaussian_rdp(z, ORDERS) for z, count in rounds)
    assert epsilon_of(rounds, 1.0, 1e-5) == pytest.approx(rdp_to_epsilon(ORDERS, rdp, 1e-5), rel=0.01)
    assert epsilon_of([(1.0, 2), (1.0, 1)], 1.0, 1e-5) == pytest.approx(epsilon_after(1.0, 1.0, 3, 1e-5))
    assert epsilon_of([(1.0, 0)], 1.0, 1e-5) == 0.0
    with pytest.raises(InvalidPrivacyParameter, match="rounds"):
        epsilon_of([(1.0, -1)], 1.0, 1e-5)


def test_the_accountant_charges_a_round_at_its_own_multiplier() -> None:
    accountant = PrivacyAccountant(noise_multiplier=1.0, sampling_rate=1.0, delta=1e-5, epsilon_budget=10.0)
    after = accountant.charge().charge(math.sqrt(5 / 3))
    assert after.rounds_spent == 1 and after.charged == (math.sqrt(5 / 3),)
    assert after.epsilon_spent == pytest.approx(epsilon_of([(1.0, 1), (math.sqrt(5 / 3), 1)], 1.0, 1e-5))
    # More noise costs less than a round at the governed multiplier, never more.
    assert (
        accountant.charge().epsilon_spent < after.epsilon_spent < accountant.charge().charge().epsilon_spent
    )
    # The same multiplier as the accountant's is counted as a uniform round.
    assert accountant.charge(1.0) == accountant.charge()
    with pytest.raises(PrivacyBudgetExceeded, match="noise multiplier 0.5"):
        accountant.charge(0.5)


def test_clipping_in_place_scales_the_rows_as_the_copy_does() -> None:
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((12, 5000)) * rng.uniform(0.1, 3.0, (12, 1))).astype(np.float32)
    copy, norms = clip_rows(X, 40.0)
    expected = (
        X * np.minimum(1.0, 40.0 / np.linalg.norm(X.astype(np.float64), axis=1)).astype(np.float32)[:, None]
    )
    inside = X.copy()
    in_place_norms = clip_rows_in_place(inside, 40.0)
    np.testing.assert_array_equal(inside, copy)
    np.testing.assert_array_equal(inside, expected)  # the same float32 factors as the einsum norms give
    np.testing.assert_allclose(in_place_norms, norms, rtol=1e-12)
    assert (np.linalg.norm(inside.astype(np.float64), axis=1) <= 40.0 * (1 + 1e-6)).all()
    assert ((norms > 40.0) == (np.linalg.norm(inside.astype(np.float64), axis=1) < norms)).all()


def test_a_private_close_clips_the_updates_where_they_lie() -> None:
    # No clipped copy (a second n x d matrix at the close's peak): the float32 deltas are clipped in place
    # and the strategy aggregates them there.
    from aggregator.round.compute import compute_round
    from tests.aggregator.roundkit import NOW, Federation

    fed = Federation()
    deltas = fed.honest(6)
    before = deltas.copy()
    inputs = fed.inputs(deltas, strategy="fedavg", dp_enabled=True, dp_clip_norm=1e-3)
    result = compute_round(inputs, np.random.default_rng(0), NOW)
    expected, norms = clip_rows(before, 1e-3)
    assert (norms > 1e-3).all()
    assert np.shares_memory(inputs.deltas, deltas)
    np.testing.assert_array_equal(deltas, expected)
    assert result.record is not None and result.record.dp_noise_std is not None
