"""scripts/attack_eval.py: its attacks against their papers' definitions, and the script end to end in its
--quick mode (so the evaluation itself is exercised by make test)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from aggregator.round.compute import ClientOutcome
from tests.aggregator.scriptkit import load_script

ae = load_script("attack_eval")


def honest_updates(h: int = 7, d: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.5, 0.2, (h, d))).astype(np.float32)


def context(honest: np.ndarray, f: int = 3, trial: Any = None) -> Any:
    return ae.AttackContext(
        honest, honest[:f].copy(), honest.shape[0] + f, np.random.default_rng(0), trial, ()
    )


def test_alie_z_is_the_papers_value() -> None:
    # n = 10, f = 3: s = floor(10/2 + 1) - 3 = 3, z = Phi^-1(7/10).
    assert ae.alie_z(10, 3) == pytest.approx(0.5244, abs=1e-4)


def test_alie_and_ipm_follow_their_definitions() -> None:
    H = honest_updates()
    alie = ae.craft("alie", context(H))
    np.testing.assert_allclose(alie[0], H.mean(axis=0) - ae.alie_z(10, 3) * H.std(axis=0), rtol=1e-5)
    assert alie.shape == (3, 40) and (alie == alie[0]).all()
    np.testing.assert_allclose(ae.craft("ipm_0.5", context(H))[1], -0.5 * H.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(ae.craft("ipm_100", context(H))[2], -100 * H.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("attack", ["minmax_uv", "minmax_std", "minsum_uv", "minsum_std"])
def test_min_max_and_min_sum_stay_inside_the_honest_spread_at_the_largest_gamma(attack: str) -> None:
    H = honest_updates().astype(np.float64)
    m = ae.craft(attack, context(H.astype(np.float32)))[0].astype(np.float64)
    dist = np.sqrt(((H - m) ** 2).sum(axis=1))
    pair = np.sqrt(((H[:, None] - H[None]) ** 2).sum(axis=2))
    if attack.startswith("minmax"):
        assert dist.max() <= pair.max() * (1 + 1e-4)
    else:
        assert (dist**2).sum() <= (pair**2).sum(axis=1).max() * (1 + 1e-4)
    # Not trivially inside: it moved away from the mean, to the boundary (within the search's resolution).
    assert np.linalg.norm(m - H.mean(axis=0)) > 0.1 * np.linalg.norm(H.std(axis=0))


def test_fang_pushes_every_coordinate_beyond_the_honest_extreme_against_its_direction() -> None:
    H = honest_updates()
    H[:, :20] -= 1.0  # coordinates moving down as well as up
    M = ae.craft("fang", context(H))
    down = H.mean(axis=0) < 0
    assert (M[:, down] >= H.max(axis=0)[down] - 1e-6).all()
    assert (M[:, ~down] <= H.min(axis=0)[~down] + 1e-6).all()


def test_unknown_attack_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        ae.craft("no_such_attack", context(honest_updates()))


def test_partitions_cover_the_data_once() -> None:
    y = np.repeat(np.arange(10), 40)
    shards = ae.partition_dirichlet(y, 10, 0.5, np.random.default_rng(3), min_size=8)
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(y)))
    assert min(len(s) for s in shards) >= 8
    assert max(np.bincount(y[s], minlength=10).max() / len(s) for s in shards) > 0.3


@pytest.fixture(scope="module")
def federation() -> Any:
    return ae.make_federation(ae.load_task("digits", 0), 0, 10, "iid")


def test_federation_is_seeded_and_has_the_governed_byzantine_fraction(federation: Any) -> None:
    again = ae.make_federation(ae.load_task("digits", 0), 0, 10, "iid")
    assert again.attackers == federation.attackers and len(federation.attackers) == 3
    assert all(np.array_equal(a, b) for a, b in zip(again.shards, federation.shards, strict=True))


def test_a_blatant_attacker_is_flagged_slashed_and_unpaid_and_honest_clients_are_not(federation: Any) -> None:
    result = ae.run(federation, "fltrust_guarded", "ipm_100", 4)
    assert result.attacker_first_flag == [1, 1, 1]
    # A 100x norm is conclusive evidence: slashed in the round it is found, not after three detections.
    assert result.attacker_first_slash == [1, 1, 1]
    assert result.attacker_reward == 0.0 and min(result.honest_rewards) > 0
    assert result.honest_flagged == 0 and result.honest_slashed == 0
    baseline = ae.run(federation, "fltrust_guarded", "none", 4)
    assert baseline.accuracy > 0.8 and result.accuracy > baseline.accuracy - 0.03


def test_the_same_attack_on_fedavg_is_contained_by_the_floor_then_the_evidence(
    federation: Any,
) -> None:
    # In round 1 FedAvg takes the -100x mean: the close refuses it and keeps the server's own step (the
    # line search's descent floor), so the harm is contained by the same pipeline (the floor, then evidence
    # -> reputation below min_reputation): the model learns from round 1 and no round is lost.
    result = ae.run(federation, "fedavg", "ipm_100", 4)
    assert result.attacker_first_flag == [1, 1, 1]
    assert result.accuracy_by_round[0] > 0.8 and result.rollbacks == 0


def test_runs_are_deterministic(federation: Any) -> None:
    a = ae.run(federation, "median", "alie", 3)
    b = ae.run(ae.make_federation(ae.load_task("digits", 0), 0, 10, "iid"), "median", "alie", 3)
    assert a.accuracy == b.accuracy and a.honest_rewards == b.honest_rewards


def test_quick_mode_prints_the_tables(capsys: pytest.CaptureFixture[str]) -> None:
    ae.main(["--quick"])
    out = capsys.readouterr().out
    assert "## digits, IID, n = 10" in out
    assert "| fltrust_guarded | none |" in out and "| fedavg | adaptive |" in out
    header = "| strategy | none | alie | ipm_100 | minmax_uv | fang | adaptive | worst drop |"
    assert header in out


def test_free_riders_are_flagged_and_paid_less_than_the_median_honest_organization(federation: Any) -> None:
    # Round 1 has no public change yet: they resend the server's reference, itself public-copy evidence
    # (issue 20); from round 2 they resend the last public change.
    result = ae.run(federation, "fltrust_guarded", "freeride", 4)
    assert result.attacker_first_flag == [1, 1, 1]
    assert result.honest_flagged == 0 and result.honest_slashed == 0
    assert result.attacker_reward < 0.5 * float(np.median(result.honest_rewards))


def test_orthogonal_rows_have_the_reference_cosine_the_median_norm_and_with_noise_the_honest_peer_cosine() -> (
    None
):
    H = honest_updates(h=7, d=400)
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)
    ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(0), None, (), reference)
    m = float(np.median(np.linalg.norm(H, axis=1)))
    g = reference / np.linalg.norm(reference)
    for peer in (None, 0.3):
        rows = ae._orthogonal_rows(ctx, 0.2, peer).astype(np.float64)
        norms = np.linalg.norm(rows, axis=1)
        np.testing.assert_allclose(norms, m, rtol=1e-4)
        np.testing.assert_allclose(rows @ g / norms, 0.2, atol=1e-4)
        U = rows / norms[:, None]
        pairwise = (U @ U.T)[~np.eye(3, dtype=bool)]
        # Identical rows without noise; with it, the cosine asked for (up to the noise's own ~1/sqrt(d)).
        np.testing.assert_allclose(
            pairwise, 1.0 if peer is None else peer, atol=1e-4 if peer is None else 0.1
        )


def test_the_subset_direction_opposes_the_most_central_honest_rows_and_leaves_the_others_alone() -> None:
    H = honest_updates(h=7, d=400).astype(np.float64)
    g = np.random.default_rng(5).normal(0.0, 1.0, 400)
    g /= np.linalg.norm(g)
    mean = H.mean(axis=0)
    central = np.argsort(-(H @ mean) / np.linalg.norm(H, axis=1))
    h = ae.subset_direction(H, g, 2)
    assert float(np.linalg.norm(h)) == pytest.approx(1.0)
    # Orthogonal to the reference and to the five honest rows it does not target ...
    np.testing.assert_allclose(H[central[2:]] @ h, 0.0, atol=1e-9)
    assert abs(float(h @ g)) < 1e-9
    # ... and against the two it does.
    assert (H[central[:2]] @ h < 0).all()


def test_the_subset_search_tries_every_share_and_sends_the_most_damaging_accepted_candidate() -> None:
    H = honest_updates(h=7, d=400)
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)
    m = float(np.median(np.linalg.norm(H, axis=1)))
    mean = H.mean(axis=0).astype(np.float64)
    seen: list[tuple[float, bool]] = []

    def trial(rows: np.ndarray) -> Any:
        # The "platform" refuses rows that push against the honest mean by more than half of its norm;
        # the damage (the validation loss after) is that push.
        push = -float(rows[0].astype(np.float64) @ mean) / float(np.linalg.norm(mean))
        accepted = push <= 0.5 * m
        seen.append((push, accepted))
        record = SimpleNamespace(holdout_loss_after=push)
        return ae.RoundResult(ae.CloseStatus.aggregated, activate=accepted, record=record)  # type: ignore[arg-type]

    ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(0), trial, (0, 1, 2), reference)
    rows = ae.orthogonal_subset(ctx).astype(np.float64)
    shares = {max(1, round(s * 7)) for s in ae.SUBSET_SHARES}
    assert len(seen) == len(ae.SUBSET_C) * (1 + len(shares))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), m, rtol=1e-4)
    sent = -float(rows[0] @ mean) / float(np.linalg.norm(mean))
    assert sent == pytest.approx(max(p for p, ok in seen if ok), rel=1e-5)
    # The full orthogonal attack pushes too hard here; a subset candidate is what got through.
    assert any(not ok for _, ok in seen) and sent > 0


@pytest.mark.parametrize("attacker_reputation, attacks", [(52.0, False), (80.0, True), (95.0, True)])
def test_the_sleeper_attacks_only_while_its_earned_standing_lasts(
    attacker_reputation: float, attacks: bool
) -> None:
    H = honest_updates(h=7, d=400)
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)
    reputation = {i: 90.0 for i in range(3, 10)} | {i: attacker_reputation for i in range(3)}

    def trial(rows: np.ndarray) -> Any:
        record = SimpleNamespace(holdout_loss_after=-float(rows[0].astype(np.float64) @ H.mean(axis=0)))
        return ae.RoundResult(ae.CloseStatus.aggregated, activate=True, record=record)  # type: ignore[arg-type]

    ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(0), trial, (0, 1, 2), reference)
    with pytest.raises(ValueError, match="needs the round's reputations"):
        ae.attacker_standing(ctx)
    ctx = replace(ctx, reputation=reputation)
    # Median 90, 60 earned without quality: 52 is no standing, 80 two thirds of it, 95 full.
    assert ae.attacker_standing(ctx) == pytest.approx(min(1.0, max(0.0, (attacker_reputation - 60) / 30)))
    rows = ae.subset_sleeper(ctx)
    if attacks:
        np.testing.assert_array_equal(rows, ae.orthogonal_subset(ctx))
    else:
        np.testing.assert_array_equal(rows, H[:3])


def test_the_decorrelated_subset_rows_share_the_push_and_differ_from_one_another() -> None:
    H = honest_updates(h=7, d=400)
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)
    g = reference / np.linalg.norm(reference)
    m = float(np.median(np.linalg.norm(H, axis=1)))
    pairwise: list[float] = []

    def trial(rows: np.ndarray) -> Any:
        # Accept every candidate; the "damage" is how much the rows agree with one another.
        U = rows.astype(np.float64) / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
        pairwise.append(float((U @ U.T)[0, 1]))
        record = SimpleNamespace(holdout_loss_after=pairwise[-1])
        return ae.RoundResult(ae.CloseStatus.aggregated, activate=True, record=record)  # type: ignore[arg-type]

    ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(0), trial, (0, 1, 2), reference)
    rows = ae.orthogonal_subset_noise(ctx).astype(np.float64)
    directions = 1 + len({max(1, round(s * 7)) for s in ae.SUBSET_SHARES})
    assert len(pairwise) == directions * len(ae.SUBSET_C) * len(ae.SUBSET_A)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), m, rtol=1e-4)
    U = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert float(U[0] @ U[1]) == pytest.approx(max(pairwise))
    assert float(U[0] @ g) == pytest.approx(float(U[1] @ g), abs=1e-4)
    assert round(float(U[0] @ g), 4) in ae.SUBSET_C and not np.allclose(rows[0], rows[1])
    # The first candidate (the whole honest mean's opposite, c = 0.1, a matched): the honest pairwise cosine,
    # up to the noise's ~1/sqrt(d); the fixed shares give c^2 + (1 - c^2) a^2.
    assert pairwise[0] == pytest.approx(ae._peer_cosine(ctx), abs=0.1)
    c = ae.SUBSET_C[0]
    for share, value in zip(ae.SUBSET_A[1:], pairwise[1:3], strict=True):
        assert share is not None and value == pytest.approx(c * c + (1 - c * c) * share * share, abs=0.1)


def test_the_fixed_noise_subset_rows_keep_each_attackers_noise_from_round_to_round() -> None:
    """``orthogonal_subset_fixed``: each attacker's noise is its own direction for the whole run, so two
    rounds' rows of one attacker agree beyond their shared push, while ``orthogonal_subset_noise``'s do not."""
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)

    def rows_of(attack: str, seed: int) -> np.ndarray:
        H = honest_updates(h=7, d=400, seed=seed)

        def trial(rows: np.ndarray) -> Any:
            # Every candidate accepted; the "damage" prefers the rows least alike (the most noise).
            U = rows.astype(np.float64) / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
            record = SimpleNamespace(holdout_loss_after=-float(U[0] @ U[1]))
            return ae.RoundResult(ae.CloseStatus.aggregated, activate=True, record=record)  # type: ignore[arg-type]

        ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(seed), trial, (0, 1, 2), reference)
        out: np.ndarray = ae.craft(attack, ctx).astype(np.float64)
        return out

    def noise_agreement(attack: str) -> float:
        a, b = rows_of(attack, 0), rows_of(attack, 1)
        U, V = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
        # Attacker 0 against itself a round later, less attacker 0 against attacker 1 (the shared part).
        return float(U[0] @ V[0] - U[0] @ V[1])

    assert noise_agreement("orthogonal_subset_fixed") > 0.3
    assert abs(noise_agreement("orthogonal_subset_noise")) < 0.2


def collapse_rows(attack: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the attack's three rows, the seven honest rows, the unit reference), float64: a collapse attack
    crafted against 7 honest updates of 400 coordinates and a random reference."""
    H = honest_updates(h=7, d=400)
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)
    ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(0), None, (), reference)
    rows = ae.craft(attack, ctx).astype(np.float64)
    return rows, H.astype(np.float64), reference / np.linalg.norm(reference)


def test_collapse_rows_sit_at_the_honest_median_cosine_and_norm_and_are_not_copies() -> None:
    rows, honest, g = collapse_rows("collapse")
    honest_norms = np.linalg.norm(honest, axis=1)
    norms = np.linalg.norm(rows, axis=1)
    assert rows.shape == (3, 400)
    np.testing.assert_allclose(norms, np.median(honest_norms), rtol=1e-2)
    np.testing.assert_allclose(rows @ g / norms, np.median(honest @ g / honest_norms), atol=1e-2)
    assert not np.array_equal(rows[0], rows[1])
    # Along the honest mean's part orthogonal to the reference: it agrees with the honest mean.
    assert float(rows[0] @ honest.mean(axis=0)) > 0


def test_collapse_up_rows_sit_at_the_honest_upper_quantile_cosine() -> None:
    rows, honest, g = collapse_rows("collapse_up")
    honest_cos = honest @ g / np.linalg.norm(honest, axis=1)
    norms = np.linalg.norm(rows, axis=1)
    np.testing.assert_allclose(rows @ g / norms, np.quantile(honest_cos, ae.COLLAPSE_UP_QUANTILE), atol=1e-2)
    assert float(np.quantile(honest_cos, ae.COLLAPSE_UP_QUANTILE)) > float(np.median(honest_cos)) + 1e-2
    assert not np.array_equal(rows[0], rows[1])


def test_the_oracle_sends_the_most_damaging_candidate_the_platform_accepts() -> None:
    H = honest_updates(h=7, d=40)
    mean = H.mean(axis=0)
    bound = 2.0 * float(np.linalg.norm(mean))
    seen: list[float] = []

    def trial(rows: np.ndarray) -> Any:
        # The "platform" accepts rows within a norm bound; the damage is the push against the honest mean.
        accepted = float(np.linalg.norm(rows[0])) <= bound
        status = ae.CloseStatus.aggregated
        return ae.RoundResult(status, activate=accepted, aggregate=rows[0].astype(np.float64))

    def damage(result: Any) -> float:
        value = -float(result.aggregate @ mean)
        seen.append(value)
        return value

    ctx = ae.AttackContext(
        H, H[:3].copy(), 10, np.random.default_rng(0), trial, (0, 1, 2), np.ones(40), None, damage
    )
    rows = ae.oracle(ctx)
    assert rows.shape == (3, 40) and float(np.linalg.norm(rows[0])) <= bound
    # Every accepted candidate was judged, and the one sent is the most damaging of them.
    assert len(seen) >= 10 and -float(rows[0].astype(np.float64) @ mean) == pytest.approx(max(seen))
    assert max(seen) > -float(mean @ mean)  # worse than sending the honest mean


def test_the_pay_search_sends_the_accepted_candidate_that_pays_the_attackers_most() -> None:
    """``orthogonal_pay`` (Kerckhoffs: the attacker knows the scoring): the orthogonal family at ``PAY_C``,
    exact copies and jittered near-copies, judged by the attackers' own total reward in the real close."""
    H = honest_updates(h=7, d=400)
    reference = np.random.default_rng(5).normal(0.0, 1.0, 400)
    g = reference / np.linalg.norm(reference)
    m = float(np.median(np.linalg.norm(H, axis=1)))
    seen: list[tuple[float, float, float]] = []

    def trial(rows: np.ndarray) -> Any:
        # The "platform" pays the attackers (participants 0-2) by their cosine to the reference, more for
        # rows that differ from each other (jitter); it refuses (rollback) a cosine above 0.4.
        rows = rows.astype(np.float64)
        cos = float(rows[0] @ g / np.linalg.norm(rows[0]))
        spread = float(np.linalg.norm(rows[0] - rows[1]) / m)
        pay = int(1e18 * (cos + spread))
        seen.append((cos, spread, pay))
        clients = tuple(
            ClientOutcome(i, i, f"0x{i:040x}", 0, 0, 0, 0, True, True, False, pay, (), 50.0) for i in range(3)
        )
        return ae.RoundResult(ae.CloseStatus.aggregated, clients=clients, activate=cos <= 0.4)

    ctx = ae.AttackContext(H, H[:3].copy(), 10, np.random.default_rng(0), trial, (0, 1, 2), reference)
    rows = ae.orthogonal_pay(ctx).astype(np.float64)
    assert len(seen) == len(ae.PAY_C) * len(ae.PAY_JITTER)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), m, rtol=1e-4)
    best = max(p for cos, _, p in seen if cos <= 0.4)
    cos = float(rows[0] @ g / np.linalg.norm(rows[0]))
    spread = float(np.linalg.norm(rows[0] - rows[1]) / m)
    assert int(1e18 * (cos + spread)) == best
    # The largest jitter at the largest accepted c: the rows are no longer copies of each other.
    assert cos == pytest.approx(0.2, abs=0.05) and spread > 0.2


def test_the_best_paid_single_attacker_is_reported_beside_the_mean() -> None:
    run = ae.RunResult(0.5, 150.0, [100.0, 200.0, 300.0], [], [], 0, 0, 0, 0, attacker_rewards=[100.0, 200.0])
    assert ae.reward_ratio([run]) == pytest.approx(0.75)
    assert ae.single_ratio(run) == pytest.approx(1.0)
    assert ae.single_ratio(ae.RunResult(0.5, 0.0, [0.0], [], [], 0, 0, 0, 0, attacker_rewards=[0.0])) == 0.0


def test_the_race_closes_on_the_platforms_rule_with_every_organization_every_round() -> None:
    opened = ae.datetime(2026, 1, 1, tzinfo=ae.UTC)
    rule = ae.CloseRule(10, opened)
    for r in range(3):
        start = opened + ae.timedelta(hours=r)
        # Three wallets at the opening reach the quorum; the round waits for the other seven.
        early = [(i, start + ae.timedelta(seconds=1)) for i in range(3)]
        late = [(i, start + ae.timedelta(seconds=100 + i)) for i in range(3, 10)]
        seen, closed = rule.close(early + late, start)
        assert seen == list(range(10)) and closed == start + ae.timedelta(seconds=109)
    # One organization stays away: the round closes at its deadline with the others.
    start = opened + ae.timedelta(hours=5)
    seen, closed = rule.close([(i, start + ae.timedelta(seconds=1)) for i in range(9)], start)
    assert seen == list(range(9)) and closed == start + ae.timedelta(seconds=300)


def test_racers_never_make_up_a_round_and_count_poisoning_flags_no_honest_organization(
    federation: Any,
) -> None:
    race = ae.run(federation, "fltrust_guarded", "race", 3)
    assert race.honest_flagged == 0 and min(race.honest_rewards) > 0 and race.failed_rounds == 0
    half = ae.make_federation(ae.load_task("digits", 0), 0, 10, "iid", fraction=0.5)
    for fed in (federation, half):
        poisoned = ae.run(fed, "fltrust_guarded", "countpoison", 3)
        assert poisoned.honest_flagged == 0 and poisoned.honest_slashed == 0
        assert min(poisoned.honest_rewards) > 0


def test_the_fourth_task_is_ten_ordinal_classes_and_learnable() -> None:
    task = ae.load_task("friedman", 0)
    assert sorted(set(task.y_train.tolist())) == list(range(10)) and task.hidden == 64
    fed = ae.make_federation(task, 0, 10, "iid")
    assert ae.run(fed, "fltrust_guarded", "none", 3).accuracy > 0.2  # chance: 0.10


def test_a_stage_after_the_default_rule_is_parsed_and_runs_through_the_round(federation: Any) -> None:
    assert ae.Stage.parse("flame+noise=0.001") == ae.Stage(cluster=True, noise=0.001)
    assert ae.Stage.parse("signmask=0.4") == ae.Stage(agreement=0.4, reverse=False)
    assert ae.Stage.parse("crowd=2") == ae.Stage(crowd=2.0)
    assert ae.StagedGuarded(ae.Stage(crowd=2.0)).reference_z == 2.0
    assert ae.StagedGuarded(ae.Stage()).reference_z == ae.FLTrustGuarded().reference_z == 2.0
    assert ae.Stage.parse("crowd=off") == ae.Stage(crowd=None)
    assert ae.StagedGuarded(ae.Stage.parse("crowd=off")).reference_z is None
    assert ae.Stage.parse("soft") == ae.Stage(soft=1.0) and ae.Stage.parse("soft=0.5") == ae.Stage(soft=0.5)
    assert ae.StagedGuarded(ae.Stage(soft=0.5)).soft == 0.5 and ae.StagedGuarded(ae.Stage()).soft == 0.0
    assert ae.Stage.parse("crowd=off+soft=2") == ae.Stage(crowd=None, soft=2.0)
    assert ae.Stage().standing and ae.StagedGuarded(ae.Stage()).standing  # the default's weights
    assert not ae.StagedGuarded(ae.Stage.parse("standing=off")).standing
    assert ae.StagedGuarded(ae.Stage.parse("similar=on")).similar
    assert ae.StagedGuarded(ae.Stage.parse("similar=off")).similar is False
    assert ae.Stage.parse("lengthen=3") == ae.Stage(lengthen=3) and ae.Stage().lengthen == 0
    # The consensus screen: the rule's option, and the screened variants the harness computes itself.
    assert ae.Stage.parse("consensus") == ae.Stage.parse("consensus=mmean/replace")
    assert ae.StagedGuarded(ae.Stage.parse("consensus")).consensus is True
    assert ae.Stage.parse("consensus=median") == ae.Stage(consensus="median", consensus_replace=False)
    assert ae.StagedGuarded(ae.Stage.parse("consensus=median/replace")).consensus is False
    assert ae.Stage.parse("peerq=0.25") == ae.Stage(peer_quantile=0.25)
    # FoolsGold's cut runs the rule on the rows it keeps: the rule's option combines with it, screened
    # variants (computed after the rule) would be silently skipped, so they are refused.
    assert ae.StagedGuarded(ae.Stage.parse("foolsgold=cut+consensus")).consensus is True
    assert ae.Stage.parse("centrez=3") == ae.Stage(center_z=3.0) and ae.Stage().center_z == 2.0
    for spec in (
        "foolsgold=cut+consensus=median",
        "foolsgold=first+peerq=0.4",
        "foolsgold=cut+consensus+cz=3",
        "foolsgold=cut+centrez=3",
    ):
        with pytest.raises(ValueError, match="screened variant"):
            ae.StagedGuarded(ae.Stage.parse(spec))
    upper = ae.Stage.parse("consensus=mmean/replace+clevel=upper+cz=2.5")
    assert upper.consensus_upper and upper.consensus_z == 2.5 and not upper.rule_consensus
    # A block of three values at the low tail widens the MAD but not the spread of the values above the median.
    values = np.array([0.4, 0.42, 0.05, 0.22, 0.06, 0.32, -0.04, -0.79, -0.79, -0.79])
    assert ae.consensus_level(values, 2.0, upper=False) < -0.79 < ae.consensus_level(values, 2.0, upper=True)
    honest = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert ae.consensus_level(honest, 2.0, upper=True) == pytest.approx(0.3 - 2 * 1.4826 * 0.1)
    with pytest.raises(ValueError, match="unknown stage"):
        ae.Stage.parse("winsorize")
    with pytest.raises(ValueError, match="on fltrust_guarded only"):
        ae.run(federation, "median+flame", "none", 1)
    plain = ae.run(federation, "fltrust_guarded", "backdoor", 2)
    staged = ae.run(federation, "fltrust_guarded+rlr=0.3", "backdoor", 2)
    # The stage changed the model (the round's aggregate went through it), and the rule is restored after.
    assert staged.accuracy_by_round != plain.accuracy_by_round
    assert ae.strategies_package.build.__module__ == "aggregator.strategies.registry"


def test_foolsgold_first_leaves_copies_out_before_the_rule_and_keeps_only_a_rounds_last_computation() -> None:
    rng = np.random.default_rng(0)
    d = 300
    reference = (rng.normal(size=d) / np.sqrt(d)).astype(np.float32)
    honest = rng.normal(size=(7, d)) / np.sqrt(d) + 0.3 * reference
    copy = honest.mean(axis=0) - 0.5 * honest.std(axis=0)  # ALIE-like: identical rows near the mean
    X = np.vstack([honest, np.repeat(copy[None, :], 3, axis=0)]).astype(np.float32)
    assert ae.Stage.parse("foolsgold=first") == ae.Stage(sybil=True)
    staged = ae.StagedGuarded(ae.Stage(sybil=True))
    inputs = ae.StrategyInputs.of(10, reference=reference)
    staged.model = ({}, {}, 1)
    trial = staged.aggregate(X[::-1].copy(), inputs)  # a trial the round does not keep
    kept = staged.aggregate(X, inputs)
    assert (
        staged.pending is not None and staged.committed is None and trial.details["foolsgold_left_out"] == 3
    )
    staged.model = ({}, {}, 2)
    result = staged.aggregate(X, inputs)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    clipped = X * np.minimum(1.0, np.median(norms) / norms)[:, None]
    np.testing.assert_allclose(staged.committed, clipped, rtol=1e-6)  # round 1's last computation only
    assert result.coefficients is not None and kept.coefficients is not None
    assert result.details["foolsgold_left_out"] == 3 and not result.coefficients[7:].any()
    assert (result.coefficients[:7] > 0).sum() >= 5
    # foolsgold=cut: the same rows left out, the rule's own weights on the rest.
    assert ae.Stage.parse("foolsgold=cut") == ae.Stage(sybil=True, sybil_cut_only=True)
    cut = ae.StagedGuarded(ae.Stage(sybil=True, sybil_cut_only=True))
    cut.model = ({}, {}, 1)
    only = cut.aggregate(X, inputs).coefficients
    rule = ae.FLTrustGuarded().aggregate(X[:7], ae.StrategyInputs.of(7, reference=reference)).coefficients
    assert only is not None and rule is not None and not only[7:].any()
    np.testing.assert_allclose(only[:7], rule)
    # Without the stage the copies are let in.
    plain = ae.FLTrustGuarded().aggregate(X, inputs).coefficients
    assert plain is not None and (plain[7:] > 0).all()


def test_the_lengthen_stage_reaches_the_close_for_its_run_only(
    federation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aggregator.round.compute as compute

    seen: list[int] = []
    search = compute.line_search_decision

    def spy(*args: Any, **kwargs: Any) -> Any:
        if "lengthen" in kwargs:  # the rule's own aggregate (a second candidate is searched without it)
            seen.append(kwargs["lengthen"])
        return search(*args, **kwargs)

    monkeypatch.setattr(compute, "line_search_decision", spy)
    ae.run(federation, "fltrust_guarded+lengthen=3", "none", 2)
    assert seen == [3, 3] and ae.rollback.LENGTHEN_DOUBLINGS == 0
    ae.run(federation, "fltrust_guarded", "none", 1)
    assert seen[-1] == 0


def test_the_coordinate_stages_act_on_the_let_in_rows_as_the_rule_clipped_them(federation: Any) -> None:
    assert ae.Stage.parse("winsor=2+blockclip=1.5+pcmedian=3") == ae.Stage(
        winsor=2.0, blockclip=1.5, pcmedian=3
    )
    weights = federation.task.init_weights(0)
    spec = {k: list(v.shape) for k, v in weights.items()}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, sum(int(np.prod(s)) for s in spec.values()))).astype(np.float32)
    norms = np.linalg.norm(X, axis=1)
    clip = float(np.median(norms))
    scale = np.minimum(1.0, clip / norms)
    c = scale * np.array([0.2, 0.2, 0.2, 0.2, 0.2, 0.0])  # the last row was not let in
    clipped = X[:5] * scale[:5, None]

    def robust(stage: ae.Stage) -> np.ndarray:
        staged = ae.StagedGuarded(stage, federation.task)
        staged.model = (weights, spec, 1)
        return staged._robust_mean(X, c, norms, clip)

    # Loose bounds: the rule's own weighted mean.
    np.testing.assert_allclose(robust(ae.Stage(winsor=1e9)), c @ X, atol=1e-5)
    np.testing.assert_allclose(robust(ae.Stage(blockclip=1e9)), c @ X, atol=1e-5)
    # Zero width: the coordinate-wise median of the let-in rows as clipped (equal weights summing to one).
    np.testing.assert_allclose(robust(ae.Stage(winsor=0.0)), np.median(clipped, axis=0), atol=1e-5)
    # A block clip at the median moves the aggregate; the principal median along every direction of five
    # rows differs from the mean too.
    assert not np.allclose(robust(ae.Stage(blockclip=1.0)), c @ X, atol=1e-4)
    assert not np.allclose(robust(ae.Stage(pcmedian=4)), c @ X, atol=1e-4)
    staged = ae.run(federation, "fltrust_guarded+winsor=1", "backdoor", 2)
    assert staged.accuracy_by_round != ae.run(federation, "fltrust_guarded", "backdoor", 2).accuracy_by_round


def test_the_clamp_stage_clamps_every_split_and_the_trigger_to_the_root_datas_range(federation: Any) -> None:
    assert ae.Stage.parse("clamp=0.01+winsor=0") == ae.Stage(clamp=0.01, winsor=0.0)
    task = ae.load_task("friedman", 0)
    clamped = ae.clamped(task, 0.0)
    assert clamped.bounds is not None
    lo, hi = clamped.bounds
    for x in (clamped.x_train, clamped.x_test, clamped.root[0], clamped.validation[0]):
        assert (x >= lo).all() and (x <= hi).all()
    np.testing.assert_array_equal(clamped.root[0], task.root[0])  # the bounds are the root data's own
    # Friedman's features are uniform (standardized, at most about 1.73): the trigger's 4.0 becomes the bound.
    stamped = ae.stamp(task.x_test[:5], clamped.bounds)
    np.testing.assert_allclose(
        stamped[:, -ae.TRIGGER_FEATURES :], np.broadcast_to(hi[-ae.TRIGGER_FEATURES :], (5, 3))
    )
    assert (ae.stamp(task.x_test[:5])[:, -ae.TRIGGER_FEATURES :] == ae.TRIGGER_VALUE).all()
    run = ae.run(federation, "fltrust_guarded+clamp=0", "backdoor", 2)
    assert run.accuracy_by_round != ae.run(federation, "fltrust_guarded", "backdoor", 2).accuracy_by_round


def test_the_augment_stage_adds_out_of_range_copies_to_honest_training_only(federation: Any) -> None:
    assert ae.Stage.parse("augment=2") == ae.Stage(augment=2)
    x, y = federation.task.root
    xa, ya = ae.augmented(x, y, 2, np.random.default_rng(0))
    assert xa.shape == (3 * len(x), x.shape[1]) and ya.tolist() == np.tile(y, 3).tolist()
    np.testing.assert_array_equal(xa[: len(x)], x)
    # Each copy differs from its example in exactly one feature, moved 3-6 standardized units out.
    changed = xa[len(x) :] != np.tile(x, (2, 1))
    assert (changed.sum(axis=1) <= 1).all()
    assert (np.abs(xa[len(x) :][changed]) >= ae.UNLEARN_RANGE[0]).all()
    plain = ae.run(federation, "fltrust_guarded", "backdoor", 2)
    augmented = ae.run(federation, "fltrust_guarded+augment=1", "backdoor", 2)
    assert augmented.accuracy_by_round != plain.accuracy_by_round


def test_the_trigger_value_comes_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ae, "TRIGGER_VALUE", ae.TRIGGER_VALUE)  # restored after the test
    argv = "--tasks digits --partitions iid --n 10 --seeds 0 --rounds 1 --strategies fltrust_guarded"
    ae.main([*argv.split(), "--attacks", "none", "--trigger", "1.5"])
    assert "features set to 1.5" in capsys.readouterr().out
    assert (ae.stamp(np.zeros((2, 5), dtype=np.float32))[:, -ae.TRIGGER_FEATURES :] == 1.5).all()


def test_the_foolsgold_stage_reweights_the_let_in_rows_from_their_histories(federation: Any) -> None:
    assert ae.Stage.parse("foolsgold+winsor=0") == ae.Stage(foolsgold=True, winsor=0.0)
    norms = np.array([1.0, 4.0, 2.0, 1.0])
    c = np.minimum(1.0, 2.0 / norms) * np.array([0.25, 0.25, 0.25, 0.25])
    out = ae._reweighted(c, np.array([1.0, 1.0, 0.0, 0.5]), norms, 2.0)
    np.testing.assert_allclose(out, np.minimum(1.0, 2.0 / norms) * np.array([0.4, 0.4, 0.0, 0.2]))
    assert not ae._reweighted(c, np.zeros(4), norms, 2.0).any()
    staged = ae.run(federation, "fltrust_guarded+foolsgold", "backdoor", 2)
    assert staged.accuracy_by_round != ae.run(federation, "fltrust_guarded", "backdoor", 2).accuracy_by_round


def test_the_decorrelated_backdoor_keeps_the_projection_and_the_honest_peer_cosine() -> None:
    rng = np.random.default_rng(3)
    d = 400
    honest = (rng.normal(size=(7, d)) + 0.5).astype(np.float32)
    own = (0.3 * rng.normal(size=(3, d)) + rng.normal(size=d)).astype(np.float32)  # a shared push
    reference = (honest.mean(axis=0) + rng.normal(size=d)).astype(np.float32)
    ctx = ae.AttackContext(honest, own, 10, np.random.default_rng(4), lambda rows: None, (7, 8, 9), reference)  # type: ignore[arg-type, return-value]
    projected = ae.backdoor_project(ctx)
    rows = ae.backdoor_decorrelated(ctx)
    g = reference / np.linalg.norm(reference)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), np.linalg.norm(projected, axis=1), rtol=1e-4)
    np.testing.assert_allclose(rows @ g, projected @ g, rtol=1e-3, atol=1e-4)
    U = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    pairwise = (U @ U.T)[~np.eye(3, dtype=bool)]
    P = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    assert float(((P @ P.T)[~np.eye(3, dtype=bool)]).mean()) > ae._peer_cosine(ctx) + 0.1
    assert abs(float(pairwise.mean()) - ae._peer_cosine(ctx)) < 0.05


def test_trigger_reversal_and_unlearning_stages_see_the_rounds_model(federation: Any) -> None:
    assert ae.Stage.parse("cleanse") == ae.Stage(cleanse=True)
    assert ae.Stage.parse("unlearn=3+share=0.5+quiet=0.4+guard+split") == ae.Stage(
        unlearn=3, share=0.5, quiet=0.4, guard=True, split=True
    )
    plain = ae.run(federation, "fltrust_guarded", "backdoor", 2)
    cleansed = ae.run(federation, "fltrust_guarded+cleanse", "backdoor", 2)
    # Every round went through Neural Cleanse (a count of flagged rounds, 0..2, is reported); with nothing
    # left out the model is the default's.
    assert cleansed.cleanse_rounds is not None and 0 <= cleansed.cleanse_rounds <= 2
    assert plain.cleanse_rounds is None
    if cleansed.cleanse_rows_out == 0:
        assert cleansed.accuracy_by_round == plain.accuracy_by_round
    unlearned = ae.run(federation, "fltrust_guarded+unlearn=2", "backdoor", 2)
    assert unlearned.accuracy_by_round != plain.accuracy_by_round
    quiet = ae.run(federation, "fltrust_guarded+unlearn=2+quiet=0.3", "backdoor", 2)
    assert quiet.accuracy_by_round != unlearned.accuracy_by_round
    # Split: the reference step trains on the other half of the root data, so with no unlearning kept the
    # rule still weighs the rows differently (the rewards move).
    split = ae.run(federation, "fltrust_guarded+unlearn=0+share=0+split", "backdoor", 2)
    assert split.attacker_reward != plain.attacker_reward
    # The guard keeps share, share / 2, share / 4 or none of the unlearning step, the largest whose model
    # has no higher validation loss than the candidate.
    stage = ae.StagedGuarded(ae.Stage(unlearn=2, guard=True), federation.task, federation.seed)
    weights = federation.task.init_weights(0)
    spec = {k: list(v.shape) for k, v in weights.items()}
    stage.model = (weights, spec, 1)
    base = ae.flatten(weights, spec)
    vector = np.zeros_like(base)
    out = stage._unlearn(vector)
    kept = stage.kept[1]
    assert kept in (1.0, 0.5, 0.25, 0.0)
    loss = ae.evaluate(ae.unflatten(base + out, spec), *federation.task.validation)[0]
    assert loss <= ae.evaluate(weights, *federation.task.validation)[0]
    # From the zero model the unlearning step lowers the loss: the guard keeps all of it.
    assert kept == 1.0 and np.any(out)
    # A thousand times that step (or 500, 250 times) overshoots: the guard keeps none of it.
    wild = ae.StagedGuarded(ae.Stage(unlearn=2, share=1000.0, guard=True), federation.task, federation.seed)
    wild.model = (weights, spec, 1)
    assert not np.any(wild._unlearn(vector)) and wild.kept[1] == 0.0
    # The round computation and the rule are restored after a staged run.
    assert ae.compute_round.__module__ == "aggregator.round.compute"
    assert ae.strategies_package.build.__module__ == "aggregator.strategies.registry"
    staged = ae.StagedGuarded(ae.Stage(unlearn=1))
    with pytest.raises(ValueError, match="need the round's model"):
        staged._round_model()


def test_the_secure_mode_runs_the_same_attacks_over_group_means(federation: Any) -> None:
    clear = ae.run(federation, "fltrust_guarded", "none", 3)
    secure = ae.run(federation, "fltrust_guarded@secure3", "none", 3)
    # Same federation, same attack-free training: the group means learn the task as well.
    assert secure.accuracy > clear.accuracy - 0.05
    assert secure.honest_flagged == 0 and min(secure.honest_rewards) > 0
    with pytest.raises(ValueError, match="s >= 3"):
        ae.run(federation, "fltrust_guarded@secure2", "none", 1)


def test_dp_is_a_strategy_suffix_and_the_secure_mode_is_charged_at_its_worst_group(federation: Any) -> None:
    from fedledger.privacy import epsilon_after

    clear = ae.run(federation, "fltrust_guarded:dp=1", "none", 2)
    secure = ae.run(federation, "fltrust_guarded@secure3:dp=1", "none", 2)
    plain = ae.run(federation, "fltrust_guarded@secure3", "none", 2)
    assert plain.epsilon is None
    assert clear.epsilon == pytest.approx(epsilon_after(1.0, 1.0, 2, 1e-5))
    # Groups of 3 (threshold 2) and 4 (threshold 3) with no dropout: the worst multiplier is between
    # sqrt(4/3) and sqrt(3/2), above the governed 1: the same z spends less than the clear mode.
    assert epsilon_after(1.5**0.5, 1.0, 2, 1e-5) <= secure.epsilon < clear.epsilon
    # The members' noise reaches the model: not the noiseless secure run's accuracy curve.
    assert secure.accuracy_by_round != plain.accuracy_by_round
    for bad in ("fltrust_guarded:dp=-1", "fltrust_guarded:clip=1", "fltrust_guarded:dp=1:z=2"):
        with pytest.raises(ValueError, match="dp="):
            ae.run(federation, bad, "none", 1)


def test_attack_free_wallets_add_their_dp_noise_and_attackers_may_skip_it(
    federation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    noised: list[int] = []
    apply = ae.MemberNoise.apply

    def counted(self: Any, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noised.append(1)
        return apply(self, update, rng)

    monkeypatch.setattr(ae.MemberNoise, "apply", counted)
    ae.run(federation, "fedavg@secure3:dp=1", "none", 1)
    assert len(noised) == federation.n  # every member, the designated attackers included
    noised.clear()
    ae.run(federation, "fedavg@secure3:dp=1", "ipm_100", 1)
    assert len(noised) == federation.n - len(federation.attackers)


def test_the_screened_consensus_variants_read_each_row_against_the_others(federation: Any) -> None:
    from aggregator.strategies.fltrust_guarded import consensus_cosines

    rng = np.random.default_rng(4)
    X = (rng.standard_normal((7, 50)) + 0.5 * rng.standard_normal(50)).astype(np.float32)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    cos = (X.astype(np.float64) @ X.T.astype(np.float64)) / np.outer(norms, norms)
    crowd = np.array([True, True, True, False, True, True, True])
    peer = rng.uniform(-0.2, 0.5, 7)
    # The unweighted mean of the unit rows is the rule's consensus with equal weights over the crowd.
    mean = ae.consensus_cosines(X, cos, norms, crowd, peer, "mean")
    np.testing.assert_allclose(mean, consensus_cosines(cos, crowd.astype(float)), atol=1e-9)
    # The coordinate median of the other crowd rows.
    median = ae.consensus_cosines(X, cos, norms, crowd, peer, "median")
    others = np.median(X[[1, 2, 4, 5, 6]].astype(np.float64), axis=0)
    assert median[0] == pytest.approx(float(X[0] @ others / (norms[0] * np.linalg.norm(others))))
    # DnC's score: minus the absolute projection, at most 0, lowest for the row furthest along.
    dnc = ae.consensus_cosines(X, cos, norms, crowd, peer, "dnc")
    assert (dnc <= 0).all()
    with pytest.raises(ValueError, match="unknown consensus"):
        ae.consensus_cosines(X, cos, norms, crowd, peer, "mode")
    for spec in ("consensus", "consensus=median", "peerq=0.4", "centrez=3"):
        assert 0.0 < ae.run(federation, f"fltrust_guarded+{spec}", "none", 1).accuracy <= 1.0


def _task_file(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_a_task_file_runs_as_the_built_in_tasks_do(tmp_path: Path) -> None:
    # An evaluator's own task: 4 classes, 12 features, its own model width and training.
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 3, (4, 12))
    y = np.repeat(np.arange(4), 150)
    X = centres[y] + rng.normal(0, 1, (y.size, 12))
    name = "file:" + _task_file(tmp_path / "task.npz", X=X, y=y, hidden=np.int64(8), epochs=np.int64(1))
    task = ae.load_task(name, 0)
    assert task.classes == 4 and task.hidden == 8 and task.train.epochs == 1
    assert task.init_weights(0)["output.bias"].shape == (4,)
    # Every example in exactly one of the clients' data, the server's root and validation data and the test set.
    sizes = task.x_train.shape[0] + task.root[1].size + task.validation[1].size + task.x_test.shape[0]
    assert sizes == y.size
    result = ae.run(ae.make_federation(task, 0, 10, "dirichlet"), "fltrust_guarded", "labelflip", 3)
    assert len(result.accuracy_by_round) == 3
    # Label flipping maps each label into the task's own classes (k - 1 - y), not a 10-class task's.
    assert 0.0 <= result.accuracy <= 1.0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.ones((40, 5))}, "needs arrays X and y"),
        ({"X": np.ones((40, 5)), "y": np.zeros(40), "depth": np.int64(2)}, "unknown: depth"),
        ({"X": np.ones((40, 5)), "y": np.repeat([0, 1], 20).astype(float)}, "integer labels"),
        ({"X": np.full((40, 5), np.nan), "y": np.repeat([0, 1], 20)}, "finite numbers"),
        ({"X": np.ones((40, 5)), "y": np.repeat([0, 2], 20)}, "each at least 10 times"),
        ({"X": np.ones((40, 3)), "y": np.repeat([0, 1], 20)}, "more than 3 features"),
        ({"X": np.ones((40, 5)), "y": np.repeat([0, 1], 20), "lr": np.float64(-1)}, "lr must be"),
    ],
)
def test_a_bad_task_file_is_refused_with_its_reason(
    tmp_path: Path, arrays: dict[str, Any], message: str
) -> None:
    path = _task_file(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        ae.task_from_file(path)
    with pytest.raises(SystemExit):
        ae.main(["--tasks", "file:" + path, "--rounds", "1"])


def test_tasks_accepts_only_known_names_and_task_files(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        ae.main(["--tasks", "mnist", "--rounds", "1"])
    with pytest.raises(SystemExit):
        ae.main(["--tasks", "file:" + str(tmp_path / "missing.npz"), "--rounds", "1"])
