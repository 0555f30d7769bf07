"""The round computation over secure-aggregation group means: defence, evidence and pay per group, split."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.round.compute import ClientMeta, CloseStatus, RoundInputs
from aggregator.round.secure import SecureGroup, compute_secure_round, split_reward, unmask_groups
from aggregator.scoring import budget
from aggregator.scoring.scores import reward_amounts
from fedledger.chain.merkle import leaf_hash, verify
from fedledger.evidence import Evidence, is_conclusive
from fedledger.privacy import epsilon_after, epsilon_of
from fedledger.secagg.groups import assign_groups

from .roundkit import NOW, Federation

SEED = bytes(range(32))


def _members(inputs: RoundInputs, samples: list[int], reputation: list[float]) -> list[ClientMeta]:
    return [
        dataclasses.replace(c, num_samples=samples[i], reputation=reputation[i])
        for i, c in enumerate(inputs.clients)
    ]


def _round(
    fed: Federation,
    deltas: np.ndarray,
    *,
    samples: list[int] | None = None,
    reputation: list[float] | None = None,
    **params: object,
) -> tuple[RoundInputs, list[SecureGroup], dict[str, int]]:
    """Members grouped by the real assignment; each group's mean is what unmasking would give."""
    n = deltas.shape[0]
    clear = fed.inputs(deltas, **params)  # type: ignore[arg-type]
    members = _members(clear, samples or [100] * n, reputation or [50.0] * n)
    row = {m.address: i for i, m in enumerate(members)}
    groups = []
    for addresses in assign_groups(SEED, [m.address for m in members], 3):
        who = tuple(members[row[a.lower()]] for a in addresses)
        groups.append(SecureGroup(who, deltas[[row[m.address] for m in who]].mean(axis=0)))
    empty = dataclasses.replace(clear, clients=(), deltas=np.zeros((0, deltas.shape[1]), np.float32))
    return empty, groups, row


def test_a_boosted_member_costs_its_group_pay_and_reputation_but_slashes_no_one_at_once() -> None:
    fed = Federation(seed=1)
    X = fed.honest(12)
    X[4] *= 200.0  # a boosted update: conclusive evidence in the clear mode
    inputs, groups, row = _round(fed, X, strategy="fedavg")
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.aggregated and result.record is not None
    by_address = {o.address: o for o in result.clients}
    culprit_group = next(g for g in groups if any(row[m.address] == 4 for m in g.members))
    for member in culprit_group.members:
        outcome = by_address[member.address]
        assert outcome.byzantine and not outcome.kept and outcome.reward_wei == 0
        assert [f.code for f in outcome.evidence] == [Evidence.group_flagged]
        assert "norm_outlier" in (outcome.evidence[0].detail or "")
        assert not is_conclusive(f.code for f in outcome.evidence)
        # The penalty is shared: 20 points / 3 members on top of the move toward the group's fitness.
        expected = np.clip(0.8 * 50.0 + 0.2 * outcome.fitness - 20.0 / 3, 0, 100)
        assert outcome.reputation_after == pytest.approx(expected)
    others = [o for o in result.clients if o.address not in {m.address for m in culprit_group.members}]
    assert all(o.kept and o.reward_wei > 0 and not o.byzantine for o in others)
    assert result.record.total_reward_wei == sum(o.reward_wei for o in result.clients)


def test_a_groups_reward_is_split_by_capped_claims_and_every_proof_verifies() -> None:
    fed = Federation(seed=2)
    X = fed.honest(9)
    samples = [100] * 9
    samples[0] = 200
    samples[1] = 10**9  # capped at sample_weight_cap x the lower median claim (10 x 100)
    inputs, groups, row = _round(fed, X, samples=samples, strategy="fedavg")
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.record is not None
    root = bytes.fromhex(result.record.rewards_root[2:])
    by_address = {o.address: o for o in result.clients}
    for group in groups:
        paid = [by_address[m.address].reward_wei for m in group.members]
        claims = [min(m.num_samples, 1000) for m in group.members]
        assert sum(paid) > 0
        for reward, claim in zip(paid, claims, strict=True):
            assert reward == pytest.approx(sum(paid) * claim / sum(claims), abs=1)
        # The group earns what its three members would each earn in the clear mode at its scores.
        fitness = by_address[group.members[0].address].fitness
        group_reputation = 0.8 * 50.0 + 0.2 * fitness
        clear_pay = reward_amounts(
            [fitness], [group_reputation], inputs.params.base_reward, 2**256, inputs.params.scoring
        )
        assert sum(paid) == 3 * clear_pay[0]
    for o in result.clients:
        proof = [bytes.fromhex(p[2:]) for p in o.merkle_proof]
        assert verify(root, leaf_hash(7, o.address, o.reward_wei), proof)
    assert len(result.clients) == 9


def test_a_member_below_min_reputation_keeps_its_group_out_of_the_aggregate() -> None:
    fed = Federation(seed=3)
    X = fed.honest(12)
    reputation = [50.0] * 12
    reputation[2] = 5.0
    inputs, groups, row = _round(fed, X, reputation=reputation, strategy="fedavg")
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    low_group = next(g for g in groups if any(row[m.address] == 2 for m in g.members))
    for m in low_group.members:
        outcome = next(o for o in result.clients if o.address == m.address)
        assert not outcome.selected and outcome.reward_wei == 0
        assert "secure-aggregation group of 3" in (outcome.excluded_reason or "")
        codes = [f.code for f in outcome.evidence]
        assert (Evidence.below_min_reputation in codes) == (row[m.address] == 2)


def test_too_few_groups_extend_the_round_like_too_few_clients() -> None:
    fed = Federation(seed=4)
    X = fed.honest(6)
    inputs, groups, _ = _round(fed, X, strategy="fedavg")
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.extended
    assert "only 2 usable updates of the 3 needed" in (result.reason or "")


def test_secure_round_refuses_individual_updates_and_members_in_two_groups() -> None:
    fed = Federation(seed=5)
    X = fed.honest(6)
    clear = fed.inputs(X)
    with pytest.raises(InvalidParameter, match="no individual update"):
        compute_secure_round(clear, [], np.random.default_rng(0), NOW)
    inputs, groups, _ = _round(fed, X)
    with pytest.raises(InvalidParameter, match="two groups"):
        compute_secure_round(inputs, [groups[0], groups[0]], np.random.default_rng(0), NOW)


@pytest.mark.parametrize("total", [0, 1, 7, 10**20 + 3])
def test_split_reward_pays_the_whole_total_in_proportion(total: int) -> None:
    claims = [("0xa", 1.0), ("0xb", 2.0), ("0xc", 3.5)]
    parts = split_reward(total, claims)
    assert sum(parts.values()) == total
    for address, claim in claims:
        assert abs(parts[address] - total * claim / 6.5) < 1 + total * 1e-12


def test_twelve_organizations_masked_two_dropping_two_poisoned_under_the_default_rule() -> None:
    """The whole pure path: real masking per group, unmasking with dropouts, then the default defence."""
    from fedledger.secagg.protocol import GroupContext
    from tests.secagg.groupkit import ADDRESSES, DOMAIN, run_group

    fed = Federation(seed=6)
    X = fed.honest(12)
    reference = fed.honest(1)[0]
    poisoned = {ADDRESSES[0], ADDRESSES[1]}
    dropping = {ADDRESSES[2], ADDRESSES[5]}
    updates = {}
    for i, address in enumerate(ADDRESSES[:12]):
        updates[address] = (-4.0 * X[i] if address in poisoned else X[i]).astype(np.float32)
    clear = fed.inputs(X, strategy="fltrust_guarded")
    meta = {
        a: dataclasses.replace(clear.clients[i], address=a, num_samples=100)
        for i, a in enumerate(ADDRESSES[:12])
    }
    transcripts = []
    expected_total = np.zeros(X.shape[1])
    for addresses in assign_groups(SEED, list(ADDRESSES[:12]), 3):
        ctx = GroupContext(DOMAIN, 7, SEED, addresses, 2, X.shape[1], clip=1.0)
        run = run_group(ctx, silent_at_mask=[a for a in addresses if a in dropping], updates=updates)
        survivors = [a for a in addresses if a not in dropping]
        expected_total += np.sum([np.clip(updates[a], -1, 1).astype(np.float64) for a in survivors], axis=0)
        transcripts.append(run.transcript)
    groups, failed = unmask_groups(transcripts, {a.lower(): m for a, m in meta.items()})
    assert failed == []
    unmasked_total = np.sum([g.mean.astype(np.float64) * len(g.members) for g in groups], axis=0)
    # The sum of the surviving groups' sums equals the survivors' updates within quantization error.
    assert np.max(np.abs(unmasked_total - expected_total)) < 1e-6
    assert sum(len(g.members) for g in groups) == 10
    inputs = dataclasses.replace(
        clear, clients=(), deltas=np.zeros((0, X.shape[1]), np.float32), reference=reference
    )
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.aggregated and result.record is not None
    assert {o.address for o in result.clients} == set(ADDRESSES[:12]) - dropping
    poisoned_groups = [g for g in groups if poisoned & {m.address for m in g.members}]
    clean = [
        o
        for o in result.clients
        if not any(o.address in {m.address for m in g.members} for g in poisoned_groups)
    ]
    assert clean and all(o.kept and o.reward_wei > 0 for o in clean)
    assert all(not o.kept and o.reward_wei == 0 for o in result.clients if o.address in poisoned)
    assert result.record.total_reward_wei == sum(o.reward_wei for o in result.clients) > 0


def test_a_group_that_cannot_be_unmasked_is_left_out_with_its_reason() -> None:
    from fedledger.secagg.protocol import GroupContext
    from tests.secagg.groupkit import ADDRESSES, DOMAIN, run_group

    fed = Federation(seed=7)
    X = fed.honest(9)
    clear = fed.inputs(X)
    meta = {a.lower(): dataclasses.replace(clear.clients[i], address=a) for i, a in enumerate(ADDRESSES[:9])}
    updates = {a: X[i] for i, a in enumerate(ADDRESSES[:9])}
    transcripts = []
    for g, addresses in enumerate(assign_groups(SEED, list(ADDRESSES[:9]), 3)):
        ctx = GroupContext(DOMAIN, 7, SEED, addresses, 2, X.shape[1], clip=1.0)
        # Two of the first group's three members vanish after their masked inputs: one reveal is left.
        silent = addresses[:2] if g == 0 else ()
        transcripts.append(run_group(ctx, silent_at_unmask=silent, updates=updates).transcript)
    groups, failed = unmask_groups(transcripts, meta)
    assert len(groups) == 2 and len(failed) == 1
    assert failed[0].members == transcripts[0].context.members
    assert "fewer than the threshold 2" in failed[0].reason
    with pytest.raises(InvalidParameter, match="no metadata"):
        unmask_groups(transcripts[1:], {})


DP = {"dp_enabled": True, "dp_clip_norm": 0.5, "dp_noise_multiplier": 1.2, "dp_epsilon_budget": 40.0}


def _with_thresholds(groups: list[SecureGroup], threshold: int) -> list[SecureGroup]:
    return [dataclasses.replace(g, threshold=threshold) for g in groups]


def test_a_dp_secure_round_is_charged_at_its_worst_groups_multiplier_and_adds_no_server_noise() -> None:
    fed = Federation(seed=8)
    X = fed.honest(12)
    inputs, groups, _ = _round(fed, X, **DP)
    # One member of the first group dropped out: that group's sum has 2 survivors at threshold 2.
    groups = _with_thresholds(groups, 2)
    groups[0] = dataclasses.replace(groups[0], members=groups[0].members[:2])
    inputs = dataclasses.replace(inputs, dp_rounds_spent=3)
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.aggregated and result.record is not None
    worst = 1.2 * math.sqrt(2 / 2)  # the dropped-out group: exactly the governed multiplier
    assert result.record.params["dp_effective_noise_multiplier"] == pytest.approx(worst)
    assert result.record.params["dp_worst_group_survivors"] == 2
    assert result.record.params["dp_member_noise_std"] == pytest.approx(1.2 * 0.5 / math.sqrt(2))
    assert result.record.epsilon_spent == pytest.approx(epsilon_of([(1.2, 3), (worst, 1)], 1.0, 1e-5))
    assert result.record.dp_noise_std == pytest.approx(worst * 0.5 / 2)
    # The members noised their sums: the server's aggregate is the one without DP, bit for bit.
    plain, _, _ = _round(fed, X)
    clear = compute_secure_round(plain, groups, np.random.default_rng(0), NOW)
    assert clear.aggregate is not None and result.aggregate is not None
    np.testing.assert_array_equal(result.aggregate, clear.aggregate)
    assert clear.record is not None and clear.record.epsilon_spent is None


def test_without_dropouts_a_secure_round_spends_less_than_the_clear_modes_round() -> None:
    fed = Federation(seed=9)
    X = fed.honest(9)
    inputs, groups, _ = _round(fed, X, **DP)
    result = compute_secure_round(inputs, _with_thresholds(groups, 2), np.random.default_rng(0), NOW)
    assert result.record is not None and result.record.epsilon_spent is not None
    assert result.record.params["dp_effective_noise_multiplier"] == pytest.approx(1.2 * math.sqrt(3 / 2))
    assert result.record.epsilon_spent < epsilon_after(1.2, 1.0, 1, 1e-5)


def test_a_dp_secure_round_over_budget_fails_and_needs_every_groups_threshold() -> None:
    fed = Federation(seed=10)
    X = fed.honest(9)
    inputs, groups, _ = _round(fed, X, **{**DP, "dp_epsilon_budget": 1.0})
    result = compute_secure_round(inputs, _with_thresholds(groups, 2), np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.failed and result.record is None
    assert "over the governed budget" in (result.reason or "")
    with pytest.raises(InvalidParameter, match="threshold"):
        compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)


def test_the_budget_is_checked_from_the_transcripts_before_any_sum_is_unmasked() -> None:
    from aggregator.round.secure import privacy_charge_before_unmasking
    from fedledger.secagg.protocol import GroupContext
    from tests.secagg.groupkit import ADDRESSES, DOMAIN, run_group

    fed = Federation(seed=11)
    X = fed.honest(9)
    inputs, _, _ = _round(fed, X, **DP)
    transcripts = []
    updates = {a: X[i] for i, a in enumerate(ADDRESSES[:9])}
    # Group 0: every member; group 1: one silent before masking; group 2: two silent (cannot be unmasked).
    for g, addresses in enumerate(assign_groups(SEED, list(ADDRESSES[:9]), 3)):
        ctx = GroupContext(DOMAIN, 7, SEED, addresses, 2, X.shape[1], clip=1.0)
        silent = {"silent_at_mask": addresses[:g], "silent_at_unmask": addresses[2:] if g == 2 else ()}
        transcripts.append(run_group(ctx, updates=updates, **silent).transcript)
    charge = privacy_charge_before_unmasking(inputs, transcripts)
    assert charge is not None and not isinstance(charge, str)
    # The worst released sum is group 1's: 2 survivors at threshold 2, the governed multiplier exactly.
    assert (charge.worst_survivors, charge.worst_multiplier) == (2, pytest.approx(1.2))
    assert charge.accountant.epsilon_spent == pytest.approx(epsilon_after(1.2, 1.0, 1, 1e-5))
    assert privacy_charge_before_unmasking(inputs, transcripts[2:]) is None
    poor = dataclasses.replace(inputs, dp_rounds_spent=50)
    refused = privacy_charge_before_unmasking(poor, transcripts)
    assert isinstance(refused, str) and "over the governed budget" in refused


def test_a_dp_round_whose_groups_carry_no_noise_fails_instead_of_being_charged() -> None:
    from aggregator.round.secure import privacy_charge, split_noiseless

    fed = Federation(seed=12)
    X = fed.honest(9)
    inputs, groups, _ = _round(fed, X, **DP)
    rng = np.random.default_rng(0)
    d = 5_000
    # Means of a larger model: the members clipped (norm <= 0.5) but, in the first case, added no noise.
    signal = [rng.normal(0.0, 0.5 / math.sqrt(d), d).astype(np.float32) for _ in groups]
    bare = [dataclasses.replace(g, mean=s, threshold=2) for g, s in zip(groups, signal, strict=True)]
    refused = privacy_charge(inputs, bare)
    assert (
        isinstance(refused, str) and "carry no noise" in refused and "not even one member's share" in refused
    )
    member_std = 1.2 * 0.5 / math.sqrt(2)
    noised = [
        dataclasses.replace(g, mean=s + rng.normal(0.0, member_std, (3, d)).sum(axis=0) / 3, threshold=2)
        for g, s in zip(groups, signal, strict=True)
    ]
    charged = privacy_charge(inputs, noised)
    assert not isinstance(charged, str)
    assert charged.worst_multiplier == pytest.approx(1.2 * math.sqrt(3 / 2))
    # A close leaves the noiseless group out (its members skipped their shares) and charges the others.
    kept, out = split_noiseless(inputs, [bare[0], *noised[1:]])
    assert kept == noised[1:] and [f.members for f in out] == [tuple(m.address for m in bare[0].members)]
    assert "left out" in out[0].reason
    assert not isinstance(privacy_charge(inputs, kept), str)
    # Without DP nothing is left out.
    plain, _, _ = _round(fed, X)
    assert split_noiseless(plain, bare) == (bare, [])


def test_sums_released_before_a_round_fails_are_charged_as_release_charge_prices_them() -> None:
    from aggregator.round.secure import release_charge, released_charge

    fed = Federation(seed=13)
    X = fed.honest(9)
    inputs, groups, _ = _round(fed, X, **DP)
    groups = _with_thresholds(groups, 2)
    # Two groups unmasked: one whole (3 of 3), one with a dropout (2 of 3, the governed multiplier exactly).
    released = [groups[0], dataclasses.replace(groups[1], members=groups[1].members[:2])]
    params = inputs.params
    charge = released_charge(params, 4, released)
    priced = release_charge(params, 4, [(3, 2), (2, 2)])
    assert charge is not None and priced is not None and not isinstance(priced, str)
    assert (charge.worst_multiplier, charge.worst_survivors) == (pytest.approx(1.2), 2)
    assert charge.accountant.epsilon_spent == pytest.approx(priced.accountant.epsilon_spent)
    assert charge.accountant.epsilon_spent == pytest.approx(epsilon_after(1.2, 1.0, 5, 1e-5))
    assert charge.mean_noise_std == pytest.approx(priced.mean_noise_std)
    # Past the budget the release is still what was spent: recorded, never refused.
    over = released_charge(params, 50, released)
    assert isinstance(release_charge(params, 50, [(3, 2), (2, 2)]), str)
    assert over is not None and over.accountant.epsilon_spent > params.dp.epsilon_budget  # type: ignore[union-attr]
    # Nothing released, or no DP: nothing to charge; a group without its threshold cannot be priced.
    assert released_charge(params, 4, []) is None
    plain, _, _ = _round(fed, X)
    assert released_charge(plain.params, 4, released) is None
    with pytest.raises(InvalidParameter, match="threshold"):
        released_charge(params, 4, [dataclasses.replace(groups[0], threshold=None)])


def test_above_the_score_budget_a_secure_round_scores_its_groups_on_a_seeded_subsample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The budget applies to the groups compute_round scores (their means stand in for clients): the same
    subsample on every close of the round, the decision on every example, the boosted group still flagged."""
    monkeypatch.setattr(budget, "SCORE_EXAMPLES", 20)
    monkeypatch.setattr(budget, "SCORE_WORK_FLOOR", 0.0)
    fed = Federation(seed=1)
    X = fed.honest(12)
    X[4] *= 200.0
    inputs, groups, row = _round(fed, X, strategy="fedavg")
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    again = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.record is not None and again.record is not None
    assert (
        result.record.params["score_examples"] == 20 < int(result.record.params["validation_examples"] or 0)
    )
    assert [o.quality for o in result.clients] == [o.quality for o in again.clients]
    culprit = {m.address for g in groups if any(row[m.address] == 4 for m in g.members) for m in g.members}
    for outcome in result.clients:
        assert outcome.byzantine == (outcome.address in culprit)
        assert (outcome.reward_wei == 0) == (outcome.address in culprit)


def test_a_kept_group_whose_share_harms_and_adds_nothing_is_not_paid_as_in_the_clear_mode() -> None:
    """Issue 20 at 50 % attackers: groups that send one vector against the honest mean (plus a little of the
    reference) are kept by the guarded rule, add nothing new (quality 0) and harm the aggregate; the clear
    mode no longer pays such rows for being kept (aggregator.scoring.scores.payable), nor does the secure
    mode pay such groups."""
    fed = Federation()
    X, reference = fed.orthogonal_half()
    clear = dataclasses.replace(fed.inputs(X, strategy="fltrust_guarded"), reference=reference)
    members = _members(clear, [100] * 10, [50.0] * 10)
    # One member per group: each group's mean is its member's update (the pay rule, not the grouping, is
    # what is tested).
    groups = [SecureGroup((members[i],), X[i]) for i in range(10)]
    inputs = dataclasses.replace(clear, clients=(), deltas=np.zeros((0, X.shape[1]), np.float32))
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.aggregated
    by_address = {o.address: o for o in result.clients}
    copies = [by_address[members[i].address] for i in range(5, 10)]
    assert all(o.kept and not o.byzantine and o.quality == 0.0 and o.fitness >= 60.0 for o in copies)
    assert all(o.reward_wei == 0 for o in copies)
    # The honest group the rule keeps is paid (the secure mode pays kept groups only, as before).
    honest_kept = [by_address[members[i].address] for i in range(5) if by_address[members[i].address].kept]
    assert honest_kept and all(o.reward_wei > 0 for o in honest_kept)


def test_a_group_that_adds_nothing_does_not_raise_its_members_reputation() -> None:
    """Issue 20: reputation rises only on an update that adds something (the clear mode's rule), and a group's
    members follow their group. A group below min_reputation whose sum is the eligible groups' mean (full
    timeliness and honesty, no evidence, quality 0) leaves every member's reputation where it was, the member
    above the group's level included; an honest group below the minimum climbs (row 2's update, the one
    whose novel part the validation data resolves: below the initial reputation only such work climbs)."""
    fed = Federation()
    honest = fed.honest(5)
    mean = honest[[0, 1, 3, 4]].mean(axis=0)
    crowd = (mean * float(np.median(np.linalg.norm(honest, axis=1)) / np.linalg.norm(mean))).astype(
        np.float32
    )
    X = np.vstack([honest, crowd, crowd, crowd])
    clear = fed.inputs(X, strategy="fedavg", min_reputation=10.0)
    members = _members(clear, [100] * 8, [50.0, 50.0, 5.0, 50.0, 50.0, 5.0, 8.0, 9.0])
    groups = [SecureGroup((members[i],), X[i]) for i in range(5)]
    groups.append(SecureGroup(tuple(members[5:8]), crowd))
    inputs = dataclasses.replace(clear, clients=(), deltas=np.zeros((0, X.shape[1]), np.float32))
    result = compute_secure_round(inputs, groups, np.random.default_rng(0), NOW)
    assert result.status is CloseStatus.aggregated
    by_address = {o.address: o for o in result.clients}
    crowd_members = [by_address[members[i].address] for i in range(5, 8)]
    assert all(
        not o.kept and not o.byzantine and o.quality == 0.0 and o.fitness >= 60.0 for o in crowd_members
    )
    assert [o.reputation_after for o in crowd_members] == [5.0, 8.0, 9.0]
    honest_low = by_address[members[2].address]
    assert honest_low.quality > 0 and honest_low.reputation_after > 5.0
