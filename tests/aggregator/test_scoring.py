"""Proof of Useful Work scores, rewards, reputation and slashing."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.scoring.reputation import (
    ReputationConfig,
    SlashReason,
    detect_byzantine,
    eligible,
    slashing_decisions,
    update_reputation,
)
from aggregator.scoring.scores import (
    ScoringConfig,
    consensus_distances,
    fitness_scores,
    honesty_scores,
    payable,
    quality_scores,
    resolved_gains,
    reward_amounts,
    timeliness_scores,
)
from aggregator.strategies.functions import trimmed_mean

WAD = 10**18


def test_quality_is_relative_to_the_rounds_best_improvement() -> None:
    # previous loss 2.0; client losses: best improves 10 %, one changes nothing, one degrades 10 %, one NaN
    q = quality_scores(2.0, [1.8, 2.0, 2.2, float("nan"), 1.9])
    np.testing.assert_allclose(q, [100.0, 50.0, 0.0, 0.0, 75.0])
    with pytest.raises(InvalidParameter, match="finite and positive"):
        quality_scores(0.0, [1.0])


def test_timeliness_falls_linearly_to_the_floor_at_the_deadline() -> None:
    np.testing.assert_allclose(timeliness_scores([0, 50, 100, 150], 0, 100), [100, 75, 50, 50])
    np.testing.assert_allclose(timeliness_scores([25], 0, 100, at_deadline=0), [75])
    with pytest.raises(InvalidParameter, match="after the opening"):
        timeliness_scores([1], 10, 10)


def test_honesty_is_scale_aware_and_zero_for_invalid_updates() -> None:
    d = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 4.0, 100.0])  # typical (median) distance 1
    expected = [100, 100, 100, 100, 50, 0, 0]
    np.testing.assert_allclose(honesty_scores(d), expected)
    # The same round at a million times the scale scores the same.
    np.testing.assert_allclose(honesty_scores(d * 1e6), expected)
    np.testing.assert_allclose(honesty_scores(d, valid=[True] * 6 + [False]), expected)
    np.testing.assert_allclose(honesty_scores([0.0, 0.0, 5.0]), [100, 100, 0])


def test_fitness_is_the_weighted_sum_and_weights_must_sum_to_one() -> None:
    np.testing.assert_allclose(
        fitness_scores([100, 50], [50, 100], [100, 0]),
        [0.4 * 100 + 0.3 * 50 + 0.3 * 100, 0.4 * 50 + 0.3 * 100],
    )
    with pytest.raises(InvalidParameter, match="sum to 1"):
        ScoringConfig(weight_quality=0.5)


def test_rewards_follow_the_tiers_and_reputation_exactly() -> None:
    base = 100 * WAD
    amounts = reward_amounts([95, 80, 70, 60, 55, 85], [100, 50, 0, 100, 100, 50], base, 10**30)
    assert amounts == [
        base * 2 * 3 // 2,  # top tier 2.0 x (0.5 + 1.0)
        base * 3 // 2,  # 1.5 x 1.0 at tier 2's minimum
        base // 2,  # 1.0 x 0.5
        base * 3 // 4,  # 0.5 x 1.5
        0,  # below the lowest tier
        base * 7 // 4,  # halfway between tier 2 (1.5) and tier 1 (2.0): 1.75 x 1.0
    ]


def test_only_an_update_that_adds_something_is_paid_kept_or_left_out() -> None:
    """Issue 20 at 50 %: timeliness and honesty alone make the lowest paid tier's fitness (60); whether the
    rule keeps a row is the attackers' to decide when they are half the round; quality (what the row adds
    on the server's validation data) is not. Eligible, unflagged and quality > 0: paid."""
    eligible_ = np.array([True, True, True, True, False, True])
    flagged = np.array([False, False, False, True, False, False])
    quality = np.array([0.0, 1e-9, 100.0, 100.0, 100.0, 0.0])
    assert payable(eligible_, flagged, quality).tolist() == [False, True, True, False, False, False]
    assert payable([], [], []).shape == (0,)
    # Kept by the rule: paid also when only its share helps the aggregate (leave-one-out gain > 0), never
    # for being kept.
    kept = np.array([True, True, True, True, True, False])
    marginal = np.array([0.01, -0.01, 0.0, 0.01, 0.01, 0.01])
    assert payable(eligible_, flagged, quality, kept, marginal).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert not payable([True], [False], [0.0], [True], [-1e-9])[0]
    assert not payable([True], [False], [0.0], [True], [float("nan")])[0]
    # A share not significantly harmful (within z capped standard errors of 0) is still paid; a clearly
    # harmful one is not, and a large error of its own buys no more than the kept rows' median error.
    kept3, flags3, q3 = [True] * 3, [False] * 3, [0.0] * 3
    se = [0.01, 0.01, 1.0]
    assert payable(kept3, flags3, q3, kept3, [-0.015, -0.03, -0.03], se).tolist() == [True, False, False]
    assert not payable(kept3, flags3, q3, kept3, [-0.015, -0.03, -0.03], se, z=0.0).any()
    with pytest.raises(InvalidParameter):
        payable([True], [False], [0.0], [True], None)
    with pytest.raises(InvalidParameter):
        payable([True], [False], [0.0], [True, False], [0.1, 0.1])
    with pytest.raises(InvalidParameter):
        payable([True], [False], [0.0], [True], [0.1], [-1.0])
    with pytest.raises(InvalidParameter):
        payable([True], [False, False], [1.0])
    with pytest.raises(InvalidParameter):
        payable([True], [False], [float("nan")])


def test_rewards_over_the_round_budget_are_scaled_down_not_refused() -> None:
    amounts = reward_amounts([95, 95], [100, 50], 100 * WAD, 300 * WAD)
    # 300 and 200 requested, 300 allowed: 3/5 each, and the sum fits the contract's cap.
    assert amounts == [180 * WAD, 120 * WAD]
    assert sum(amounts) <= 300 * WAD


def test_reputation_moves_toward_fitness_and_detections_cost_extra() -> None:
    new = update_reputation(
        np.array([50.0, 50.0, 10.0]), np.array([100.0, 0.0, 0.0]), np.array([False, False, True])
    )
    np.testing.assert_allclose(new, [60.0, 40.0, 0.0])
    assert eligible(new).tolist() == [True, True, False]


def test_a_row_that_adds_nothing_cannot_raise_its_reputation_but_still_loses_it() -> None:
    """Fitness without quality is timeliness and honesty (60), the sender's to take: a row that adds
    nothing keeps at most its reputation, and falls as any row does."""
    before = np.array([5.0, 5.0, 80.0, 50.0])
    fitness = np.array([60.0, 60.0, 60.0, 60.0])
    adds = np.array([True, False, False, False])
    new = update_reputation(before, fitness, np.array([False, False, False, True]), adds=adds)
    np.testing.assert_allclose(new, [16.0, 5.0, 76.0, 30.0])
    with pytest.raises(InvalidParameter, match="adds"):
        update_reputation(before, fitness, np.zeros(4, dtype=bool), adds=adds[:2])


def test_below_where_everyone_starts_a_reputation_climbs_only_on_resolved_work() -> None:
    """Quality's benefit of the doubt pays a novel part the validation set cannot tell from nothing; it
    does not rehabilitate: below the initial reputation (50) a row climbs only where ``resolved``."""
    before = np.array([30.0, 30.0, 50.0, 80.0, 30.0])
    fitness = np.full(5, 90.0)
    adds = np.array([True, True, True, True, False])
    resolved = np.array([True, False, False, False, True])
    new = update_reputation(before, fitness, np.zeros(5, dtype=bool), adds=adds, resolved=resolved)
    # 30 -> 42 resolved; 30 kept unresolved; 50 and 80 climb as before; adds still needed (30 kept).
    np.testing.assert_allclose(new, [42.0, 30.0, 58.0, 82.0, 30.0])
    # Falling is as before, and evidence still costs its penalty.
    low = update_reputation(
        before[:2], np.zeros(2), np.array([False, True]), resolved=np.zeros(2, dtype=bool)
    )
    np.testing.assert_allclose(low, [24.0, 4.0])
    with pytest.raises(InvalidParameter, match="resolved"):
        update_reputation(before, fitness, np.zeros(5, dtype=bool), resolved=resolved[:2])


def test_resolved_gains_are_positive_beyond_quality_s_capped_allowance() -> None:
    value = np.array([3.0, 3.0, 1.0, -1.0, np.inf, np.nan])
    stderr = np.array([1.0, 10.0, 1.0, 0.1, 1.0, 1.0])
    # The allowance z x min(se, median se = 1): 3 - 2 > 0 (a large error is capped at the median's).
    assert resolved_gains(value, stderr).tolist() == [True, True, False, False, False, False]
    assert resolved_gains(value[:3], stderr[:3], z=0.5).tolist() == [True, True, True]
    assert resolved_gains([0.1, -0.1]).tolist() == [True, False]  # no errors: the sign decides
    assert resolved_gains([]).tolist() == []
    with pytest.raises(InvalidParameter, match="standard error"):
        resolved_gains([1.0], [-1.0])
    with pytest.raises(InvalidParameter, match="non-negative"):
        resolved_gains([1.0], [1.0], z=-1.0)


def test_slashing_needs_repeated_evidence_or_inactivity_never_one_low_score() -> None:
    decisions = slashing_decisions(
        byzantine_counts=np.array([0, 2, 0, 3, 0]),
        stakes=[1000 * WAD] * 5,
        reputation=[80.0, 0.0, 5.0, 5.0, 60.0],
        seconds_since_active=np.array([0, 0, 0, 0, 8 * 24 * 3600]),
    )
    assert [(d.index, d.reason) for d in decisions] == [
        (3, SlashReason.byzantine),
        (4, SlashReason.inactive),
    ]
    assert all(d.amount == 100 * WAD for d in decisions)


def test_repeated_evidence_slashes_only_once_it_has_outweighed_the_useful_work() -> None:
    """An organization flagged now and then (very non-IID labels) keeps a reputation above min_reputation
    from its useful rounds in between; one flagged round after round falls below it and is slashed."""
    config = ReputationConfig()
    counts = np.array([3, 3, 5])
    decisions = slashing_decisions(counts, [100] * 3, [config.min_reputation, 35.0, 9.9], config=config)
    assert [d.index for d in decisions] == [2]
    with pytest.raises(InvalidParameter, match="one entry per client"):
        slashing_decisions(counts, [100] * 3, [0.0, 0.0])
    # Conclusive evidence this round (a boosted norm, a rejected update) needs no wait.
    sure = slashing_decisions(
        counts, [100] * 3, [80.0, 35.0, 90.0], config=config, conclusive=[True, False, True]
    )
    assert [d.index for d in sure] == [0, 2]


def test_conclusive_evidence_slashes_in_the_round_it_is_found_whatever_the_count() -> None:
    """Issue 21.7, the attack: a wallet flagged with conclusive evidence (a 10x norm) in two rounds, below the
    count of three, was never slashed and could exit with its whole stake (then rotate to a fresh wallet).
    Each conclusive round slashes now, the first one included."""
    config = ReputationConfig()
    stake = 1000 * WAD
    for count in (1, 2):
        [decision] = slashing_decisions([count], [stake], [80.0], config=config, conclusive=[True])
        assert decision.reason == SlashReason.byzantine
        assert decision.amount == stake * round(config.slash_fraction * 1_000_000) // 1_000_000 > 0
    # Inconclusive evidence still waits for the count and a reputation below min_reputation.
    assert not slashing_decisions([2], [stake], [0.0], config=config, conclusive=[False])


def test_an_attacker_flagged_every_round_is_slashed_as_soon_as_its_count_allows() -> None:
    """Reputation 50 at enrollment, flagged with fitness 30 (no quality, no honesty) every round: below
    min_reputation after two rounds, so the slash lands when the count reaches the threshold (round 3)."""
    config = ReputationConfig()
    reputation, count, slashed_at = np.array([50.0]), np.array([0]), None
    for r in range(1, 6):
        reputation = update_reputation(reputation, np.array([30.0]), np.array([True]), config)
        count += 1
        if slashed_at is None and slashing_decisions(count, [100], reputation, config=config):
            slashed_at = r
    assert slashed_at == config.byzantine_threshold


def test_intermittent_evidence_with_useful_rounds_between_is_never_slashed() -> None:
    """Flagged every third round over fifty rounds, fitness 75 in between: the count passes the threshold
    but the reputation never falls below min_reputation."""
    config = ReputationConfig()
    reputation, count = np.array([50.0]), np.array([0])
    for r in range(1, 51):
        flagged = r % 3 == 0
        fitness = 30.0 if flagged else 75.0
        reputation = update_reputation(reputation, np.array([fitness]), np.array([flagged]), config)
        count += flagged
        assert not slashing_decisions(count, [100], reputation, config=config), f"round {r}"
    assert count[0] >= config.byzantine_threshold


@pytest.mark.slow
def test_honest_clients_of_a_large_model_are_never_flagged_over_fifty_rounds() -> None:
    """10 honest clients, 1M parameters, small natural spread: no detection, no slashing, no ban.

    One extra client scales its update 100x from round 1: it must be detected every round and slashed
    once its detections reach the threshold, so the rule is not merely lenient.
    """
    rng = np.random.default_rng(2026)
    n_honest, d, rounds = 10, 1_000_000, 50
    config = ReputationConfig()
    reputation = np.full(n_honest + 1, 50.0)
    counts = np.zeros(n_honest + 1, dtype=int)
    first_slash_of_attacker = None
    for r in range(rounds):
        direction = rng.standard_normal(d, dtype=np.float32) * 1e-3
        X = np.empty((n_honest + 1, d), dtype=np.float32)
        X[:n_honest] = direction + rng.standard_normal((n_honest, d), dtype=np.float32) * 2e-4
        X[n_honest] = X[0] * 100
        consensus = trimmed_mean(X, 0.2)
        honesty = honesty_scores(consensus_distances(X, consensus))
        byzantine = detect_byzantine(honesty, config)
        counts += byzantine
        fitness = fitness_scores(np.full(n_honest + 1, 60.0), np.full(n_honest + 1, 80.0), honesty)
        reputation = update_reputation(reputation, fitness, byzantine, config)
        decisions = slashing_decisions(counts, [100] * (n_honest + 1), reputation, config=config)
        assert not byzantine[:n_honest].any(), f"round {r}: honest client flagged"
        assert all(dec.index == n_honest for dec in decisions), f"round {r}: honest client slashed"
        assert eligible(reputation[:n_honest], config).all()
        assert byzantine[n_honest], f"round {r}: the 100x attacker went undetected"
        if first_slash_of_attacker is None and any(dec.reason == SlashReason.byzantine for dec in decisions):
            first_slash_of_attacker = r
    assert first_slash_of_attacker == config.byzantine_threshold - 1
    assert not eligible(reputation[n_honest:], config).any()


def test_rewards_carry_no_float_dust_into_wei() -> None:
    """Issue 22 item 9: `267.23200000000002 tokens` came from a float score's last digits paid as wei."""
    from aggregator.scoring.scores import reward_amounts

    amounts = reward_amounts([100.0, 85.3], [0.1 + 0.2, 67.23200000000002], 100 * 10**18, 10**30)
    assert all(a % 10**12 == 0 for a in amounts), amounts


def _peer_rows() -> np.ndarray:
    """Seven updates around one direction, an eighth that opposes them, a ninth that agrees with them."""
    rng = np.random.default_rng(11)
    common = rng.normal(0.0, 1.0, 200)
    rows = [common + rng.normal(0.0, 1.0, 200) for _ in range(7)]
    rows.append(-common + rng.normal(0.0, 1.0, 200))
    rows.append(common + rng.normal(0.0, 1.0, 200))
    return np.array(rows, dtype=np.float32)


def test_peer_outliers_are_the_rows_that_oppose_the_other_updates() -> None:
    from aggregator.scoring.round import peer_outliers

    X = _peer_rows()
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    everyone = np.ones(9, dtype=bool)
    asked = np.zeros(9, dtype=bool)
    asked[[7, 8]] = True
    assert peer_outliers(X, norms, asked, everyone).tolist() == [False] * 7 + [True, False]
    # Nobody asked about (no direction evidence): nothing computed, nothing flagged.
    assert not peer_outliers(X, norms, np.zeros(9, dtype=bool), everyone).any()
    # Fewer than three counted rows: no crowd to be an outlier of.
    two = np.zeros(9, dtype=bool)
    two[:2] = True
    assert not peer_outliers(X, norms, asked, two).any()


def test_only_a_confirmed_direction_flag_counts_toward_slashing() -> None:
    from aggregator.scoring.round import RoundScores

    n = 5
    zeros = np.zeros(n)
    flags = np.array([True, True, True, True, False])
    direction = np.array([True, True, False, True, False])
    boosted = np.array([False, False, True, True, False])
    scores = RoundScores(
        *(zeros,) * 4,
        evidence=flags,
        cosine=zeros,
        direction=direction,
        boosted=boosted,
        copied=np.zeros(n, dtype=bool),
        norms=zeros,
        marginal=zeros,
        marginal_stderr=zeros,
        solo_gain=zeros,
        loss_before=1.0,
        peer_outlier=np.array([True, False, False, False, False]),
    )
    # Row 0: direction, a peer outlier; row 1: direction alone, agreeing with its peers (not counted); row 2:
    # a boosted norm; row 3: direction unconfirmed but also boosted (counted); row 4: no flag.
    assert scores.slash_counted.tolist() == [True, False, True, True, False]
