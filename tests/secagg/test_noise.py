"""Differential privacy under secure aggregation: each member's noise share, and what the unmasked sum carries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedledger.privacy import InvalidPrivacyParameter, group_noise_multiplier, member_noise_std
from fedledger.secagg.errors import QuantizationError
from fedledger.secagg.noise import MemberNoise
from fedledger.secagg.quantize import Quantizer

from .groupkit import context, noise_rng, run_group, updates_for

CLIP, Z = 1.0, 1.0
SIGMA = Z * CLIP


def test_a_member_adds_sigma_squared_over_the_threshold() -> None:
    assert member_noise_std(2.0, 5, 3) == pytest.approx(2.0 / math.sqrt(3))
    assert member_noise_std(2.0, 5, 5) == pytest.approx(2.0 / math.sqrt(5))
    assert member_noise_std(0.0, 3, 2) == 0.0
    # The fewest survivors a sum is unmasked with carry exactly the clear mode's variance together.
    for k, t in ((3, 2), (5, 3), (7, 7)):
        assert t * member_noise_std(SIGMA, k, t) ** 2 == pytest.approx(SIGMA**2)
    for sigma, k, t in ((1.0, 3, 4), (1.0, 3, 0), (-1.0, 3, 2), (math.inf, 3, 2)):
        with pytest.raises(InvalidPrivacyParameter):
            member_noise_std(sigma, k, t)


def test_a_group_sums_multiplier_grows_with_its_survivors_and_is_never_below_z() -> None:
    assert group_noise_multiplier(1.5, 3, 3) == pytest.approx(1.5)
    assert group_noise_multiplier(1.0, 5, 3) == pytest.approx(math.sqrt(5 / 3))
    assert group_noise_multiplier(1.0, 4, 3) < group_noise_multiplier(1.0, 5, 3)
    with pytest.raises(InvalidPrivacyParameter, match="never released"):
        group_noise_multiplier(1.0, 2, 3)


def test_member_noise_is_the_governed_setting_over_the_threshold_and_the_range_covers_its_tail() -> None:
    noise = MemberNoise.for_group(clip_norm=0.5, noise_multiplier=2.0, group_size=5, threshold=3)
    assert noise.std == pytest.approx(1.0 / math.sqrt(3))
    small, large = noise.required_range(100), noise.required_range(1_000_000)
    assert 0.5 + 6 * noise.std < small < large < 0.5 + 9 * noise.std
    with pytest.raises(InvalidPrivacyParameter):
        MemberNoise(clip_norm=0.0, std=1.0)
    with pytest.raises(InvalidPrivacyParameter):
        MemberNoise(clip_norm=1.0, std=0.0)


def test_apply_clips_to_the_l2_norm_then_adds_noise_of_the_share() -> None:
    noise = MemberNoise(clip_norm=2.0, std=0.25)
    update = np.full(40_000, 1.0, dtype=np.float32)  # norm 200, clipped to 2
    noised = noise.apply(update, np.random.default_rng(0))
    assert noised.dtype == np.float32 and noised.shape == update.shape
    clipped = update.astype(np.float64) * (2.0 / 200.0)
    assert (noised - clipped).std() == pytest.approx(0.25, rel=0.02)
    assert abs((noised - clipped).mean()) < 5 * 0.25 / math.sqrt(update.size)
    small = np.full(4, 0.1, dtype=np.float32)  # norm 0.2: left as it is
    redrawn = np.random.default_rng(1).standard_normal(4, dtype=np.float32) * np.float32(0.25)
    np.testing.assert_allclose(noise.apply(small, np.random.default_rng(1)), 0.1 + redrawn, rtol=1e-6)
    with pytest.raises(QuantizationError, match="NaN"):
        noise.apply(np.array([np.nan], dtype=np.float32), np.random.default_rng(0))


def test_a_quantizer_that_would_cut_or_round_the_noise_off_is_refused() -> None:
    noise = MemberNoise(clip_norm=1.0, std=0.5)
    with pytest.raises(QuantizationError, match="at least"):
        noise.check_fits(Quantizer(clip=1.0, max_summands=5), 1000)
    noise.check_fits(Quantizer(clip=noise.required_range(1000), max_summands=5), 1000)
    with pytest.raises(QuantizationError, match="coarse"):
        MemberNoise(clip_norm=1.0, std=1e-6).check_fits(Quantizer(clip=1000.0, max_summands=5), 10)


D = 20_000


def _noised_group(k: int, t: int, dropping: int) -> tuple[np.ndarray, np.ndarray, float, float, int]:
    """One group through the real protocol with DP noise: (unmasked total, sum of the survivors' clipped
    updates, sum of their exact noised float32 inputs, quantizer error bound, survivors)."""
    noise = MemberNoise.for_group(CLIP, Z, k, t)
    ctx = context(k, t, dimension=D, clip=math.ceil(noise.required_range(D)))
    updates = updates_for(ctx, seed=3, scale=0.3)  # norms ~42: every update is clipped to CLIP
    silent = list(ctx.members[:dropping])
    run = run_group(ctx, silent_at_mask=silent, updates=updates, noise=noise)
    result = run.transcript.unmask()
    survivors = [m for m in ctx.members if m not in silent]
    assert list(result.survivors) == survivors
    clipped = np.zeros(D)
    inputs = np.zeros(D)
    for m in survivors:
        u = updates[m].astype(np.float64)
        clipped += u * min(1.0, CLIP / float(np.linalg.norm(u)))
        # The member's own noised input, redrawn from the same generator it used.
        inputs += noise.apply(updates[m], noise_rng(m)).astype(np.float64)
    return result.total, clipped, inputs, ctx.quantizer.sum_error(len(survivors)), len(survivors)


@pytest.mark.parametrize(("k", "t", "dropping"), [(5, 3, 0), (5, 3, 2), (3, 2, 1), (3, 2, 0)])
def test_the_unmasked_sum_carries_the_noise_of_its_survivors_and_quantization_keeps_it(
    k: int, t: int, dropping: int
) -> None:
    total, clipped, inputs, error, m = _noised_group(k, t, dropping)
    # Quantization kept every member's noised input: nothing was cut at the range, only rounded.
    assert np.max(np.abs(total - inputs)) <= error + 1e-9
    residual = total - clipped
    expected = SIGMA * math.sqrt(m / t)
    assert expected >= SIGMA  # never less noise than the clear mode's sum
    # The sample std of D Gaussian draws has relative standard error 1 / sqrt(2 D) (0.5 %): 5 of them.
    assert residual.std() == pytest.approx(expected, rel=5 / math.sqrt(2 * D))
    assert abs(residual.mean()) < 5 * expected / math.sqrt(D)
    # At the smallest admissible survivor count the sum carries exactly the clear mode's sigma.
    if m == t:
        assert residual.std() == pytest.approx(SIGMA, rel=5 / math.sqrt(2 * D))


def test_a_member_refuses_to_noise_into_a_group_whose_range_is_too_small() -> None:
    noise = MemberNoise.for_group(CLIP, Z, 3, 2)
    ctx = context(3, 2, dimension=64, clip=1.0)
    with pytest.raises(QuantizationError, match="cut the noise off"):
        run_group(ctx, noise=noise)
    # Without noise the same group runs (existing callers are unchanged).
    assert run_group(ctx).transcript.unmask().survivors == ctx.members


def test_a_rounds_snapshot_gives_each_member_its_share_and_the_group_its_range() -> None:
    from fedledger.secagg.noise import group_range, noise_for_round

    off = {"dp_enabled": False, "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0}
    assert noise_for_round(off, 3, 2) is None and noise_for_round({}, 3, 2) is None
    assert group_range(1.0, None, 1000) == 1.0
    on = {"dp_enabled": True, "dp_clip_norm": 0.5, "dp_noise_multiplier": 2}
    noise = noise_for_round(on, 5, 3)
    assert noise == MemberNoise(0.5, 1.0 / math.sqrt(3))
    # The governed range is widened to hold the noise, never narrowed.
    assert group_range(1.0, noise, 1000) == noise.required_range(1000) > 1.0
    assert group_range(100.0, noise, 1000) == 100.0
    noise.check_fits(Quantizer(group_range(1.0, noise, 1000), 5), 1000)
    with pytest.raises(InvalidPrivacyParameter, match="dp_noise_multiplier"):
        noise_for_round({"dp_enabled": True, "dp_clip_norm": 1.0}, 3, 2)


def test_a_group_mean_without_any_members_noise_is_told_apart() -> None:
    from fedledger.secagg.noise import noise_evident

    noise = MemberNoise(clip_norm=1.0, std=0.5)
    rng = np.random.default_rng(4)
    d, m = 10_000, 3
    signal = rng.normal(0.0, 1.0, d)
    signal *= 0.9 / np.linalg.norm(signal)  # the survivors' clipped mean: norm at most the clip
    full = signal + rng.normal(0.0, noise.std, (m, d)).sum(axis=0) / m
    one_share = signal + rng.normal(0.0, noise.std, d) / m  # the other members skipped theirs
    assert noise_evident(full, m, noise) and noise_evident(one_share, m, noise)
    assert not noise_evident(signal, m, noise)
    assert not noise_evident(np.zeros(d), m, noise)
    # Too few coordinates to tell: never refused.
    assert noise_evident(np.zeros(20), m, noise)
    with pytest.raises(InvalidPrivacyParameter):
        noise_evident(full, 0, noise)
