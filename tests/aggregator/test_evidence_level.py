"""The direction evidence's level (issue 20 item 4): a coordinated minority at the round's median cannot
collapse it onto honest organizations, and real attackers below the crowd stay flagged."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.scoring.reputation import (
    ReputationConfig,
    direction_evidence,
    outlier_level,
    upper_half_level,
    window_level,
)
from aggregator.scoring.scores import robust_spread

Z = ReputationConfig().evidence_outlier_z
BELOW = ReputationConfig().evidence_cosine_below


def _median_level(values: list[float]) -> float:
    v = np.asarray(values)
    return float(np.median(v)) - Z * robust_spread(v)


# docs/benchmarks.md, "the default outside its grid": digits Dirichlet(0.5), n = 10, seed 1, round 10 under
# attack_eval's collapse. Rows 1, 2 and 4 are the attackers (at the honest median cosine, jittered); row 5
# is an honest organization whose update alone and in the aggregate raised the validation loss.
COLLAPSE_ROUND = [0.274, 0.051, 0.051, 0.099, 0.051, -0.220, 0.197, -0.039, 0.051, 0.034]
ATTACKERS = [1, 2, 4]


def test_attackers_at_the_median_do_not_make_an_honest_organization_an_outlier() -> None:
    harmful = [0.1] * 10
    harmful[5] = -0.1
    # The median level alone: the three equal cosines shrink the spread and -0.22 is "an outlier" (what
    # flagged the organization four rounds running and slashed it).
    assert _median_level(COLLAPSE_ROUND) > -0.22
    assert not direction_evidence(COLLAPSE_ROUND, harmful).any()
    honest = [c for i, c in enumerate(COLLAPSE_ROUND) if i not in ATTACKERS]
    # The seven honest rows alone: -0.35. With the attackers the level stays below the honest row.
    assert -0.36 < _median_level(honest) < -0.34
    assert outlier_level(COLLAPSE_ROUND, Z, BELOW) < -0.22
    assert outlier_level(COLLAPSE_ROUND, Z, BELOW) <= _median_level(COLLAPSE_ROUND)
    # The same row far below the crowd is still evidence: the collapse's rows do not shield attackers.
    far = list(COLLAPSE_ROUND)
    far[5] = -0.6
    assert np.flatnonzero(direction_evidence(far, harmful)).tolist() == [5]


def test_real_attackers_below_the_crowd_stay_flagged() -> None:
    """Rounds logged from attack_eval (n = 10, the attackers first) where the median level flagged every
    harmful attacker below -0.2; each of the two spreads alone would have let some of them out."""
    gain = [-0.1] * 3 + [0.1] * 7
    # digits Dirichlet(0.5), IPM x0.5: a long honest upper tail (0.43) widens the upper half's spread.
    ipm = [-0.49, -0.49, -0.49, 0.04, 0.1, 0.15, 0.16, 0.18, 0.25, 0.43]
    upper = upper_half_level(np.array(ipm), Z)
    assert upper is not None and upper < -0.49
    assert np.flatnonzero(direction_evidence(ipm, gain)).tolist() == [0, 1, 2]
    # synthetic IID, Fang; digits Dirichlet(0.5), label flipping: attackers just above the cosine
    # threshold (-0.19, -0.18) would widen a window reaching down to it; the window reaches as far below
    # the median as the largest cosine is above it.
    fang = [-0.22, -0.21, -0.19, 0.24, 0.31, 0.32, 0.34, 0.36, 0.38, 0.44]
    assert np.flatnonzero(direction_evidence(fang, gain)).tolist() == [0, 1]
    flip = [-0.23, -0.18, -0.17, 0.24, 0.31, 0.32, 0.35, 0.37, 0.4, 0.66]
    assert np.flatnonzero(direction_evidence(flip, gain)).tolist() == [0]


def test_the_spreads_are_normal_calibrated_and_undefined_on_too_few_values() -> None:
    rng = np.random.default_rng(3)
    crowd = rng.normal(0.5, 0.05, 200_001)
    # A normal crowd: the upper half's level is about the median less z standard deviations; the window
    # (half-width to the largest value, far out here) about z standard deviations too.
    upper = upper_half_level(crowd, Z)
    window = window_level(crowd, Z, BELOW)
    assert upper is not None and window is not None
    assert abs(upper - (0.5 - Z * 0.05)) < 2e-3
    assert abs(window - (0.5 - Z * 0.05)) < 2e-3
    assert upper_half_level(np.array([0.1, 0.2, 0.3, 0.4]), Z) is None  # two values in the upper half
    assert window_level(np.array([-0.3, -0.25, -0.2, -0.3]), Z, BELOW) is None  # median at/below -0.2
    assert window_level(np.array([0.1, 0.1, 0.1]), Z, BELOW) is None  # no width
    assert outlier_level([], Z, BELOW) == -np.inf
    # Too few values for either spread: the median level.
    assert outlier_level([0.1, 0.2, 0.3, 0.4], Z, BELOW) == _median_level([0.1, 0.2, 0.3, 0.4])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=40))
def test_the_level_never_flags_a_row_the_median_level_did_not(values: list[float]) -> None:
    assert outlier_level(values, Z, BELOW) <= _median_level(values)


def test_rows_left_out_for_their_record_are_judged_by_the_median_level() -> None:
    """digits Dirichlet(0.5), n = 10, seed 1, Min-Max, round 8: the attackers were slashed in round 4 and
    resend their rows; the seven honest cosines are spread (0.08 to 0.40) but four of them sit together, so
    their MAD is small (median level +0.012) and the held level is -0.38. Judged by the held level the
    slashed rows at -0.336 went unflagged, climbed back above min_reputation and were paid."""
    cos = [0.279, -0.336, -0.336, 0.084, -0.336, -0.102, 0.396, 0.079, 0.099, 0.107]
    gain = [0.1, -0.0173, -0.0173, 0.1, -0.0173, 0.1, 0.1, 0.1, 0.1, 0.1]
    counted = np.ones(10, dtype=bool)
    counted[[1, 2, 4]] = False
    honest = np.array(cos)[counted]
    assert outlier_level(honest, Z, BELOW) < -0.336 < _median_level(list(honest))
    flagged = direction_evidence(cos, gain, loss=0.36, among=counted)
    assert np.flatnonzero(flagged).tolist() == [1, 2, 4]
