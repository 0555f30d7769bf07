"""A round computed over secure-aggregation group means: the defence, scores and pay see groups, not members.

Under secure aggregation (:mod:`fedledger.secagg`) the server learns each group's sum and which members'
updates are in it, nothing about one member. :func:`compute_secure_round` runs :func:`compute_round`
unchanged with every group standing in for one client (its survivors' unweighted mean as the update),
then maps each group's decisions back onto its members:

- **Weight.** A group weighs the sum of its members' sample claims, each capped at ``sample_weight_cap``
  x the lower median claim of all members of the round (the cap of the clear mode, applied per member so
  that one inflated claim buys its group no more than it would buy the member alone).
- **Eligibility.** A group's reputation is its least reputable member's: a group with a member below
  ``min_reputation`` is scored but not aggregated. Assignment keeps this rare: members below the minimum
  are grouped among themselves (:func:`fedledger.secagg.groups.assign_tiers`), so they can still be scored
  and climb back, without dragging an honest group out of the aggregate.
- **Pay.** A kept group that the clear mode's rule pays (:func:`aggregator.scoring.scores.payable`: not
  one whose share is significantly harmful and adds nothing new) earns what its ``k`` members would each
  earn in the clear mode at the group's fitness and reputation (``k`` x base x multipliers, the round
  budget applied over all groups), split among its members by their capped claims (integer wei, the
  remainder to the largest fractions, ties by address); the Merkle tree is rebuilt over members.
- **Evidence.** A flagged group's members are not paid, and each counts a detection and loses the
  Byzantine penalty divided by the group's size (the chance, with one culprit, that it is this member);
  their evidence is :attr:`Evidence.group_flagged`, never conclusive, so no member is slashed on one
  group's evidence. Slashing needs ``byzantine_threshold`` detections and a reputation below the minimum;
  groups are redrawn every round from fresh randomness, so repeated detections come from different groups:
  an attacker is in every flagged group it makes, an honest member only in those it is drawn into.
- **Differential privacy** (distributed: the server never holds a sum before its noise). Each member clips
  its update to the governed DP clip and adds its share of the noise before masking
  (:class:`fedledger.secagg.noise.MemberNoise`); the server adds none and clips nothing. A group's sum of m
  survivors is one Gaussian mechanism at multiplier z sqrt(m / t) (>= z: a sum is only unmasked with m >= t);
  each member is in one group, so the round is charged at the worst group's multiplier (:func:`privacy_charge`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import numpy as np

from aggregator.errors import InvalidParameter, PrivacyBudgetExceeded
from aggregator.round.compute import (
    ClientMeta,
    ClientOutcome,
    CloseStatus,
    Detail,
    RoundInputs,
    RoundResult,
    SampleWeights,
    compute_round,
)
from aggregator.round.dp import PrivacyAccountant
from aggregator.round.params import RoundParams
from aggregator.scoring.reputation import update_reputation
from aggregator.scoring.scores import reward_amounts
from fedledger.chain.merkle import RewardTree
from fedledger.evidence import Evidence, Finding
from fedledger.privacy import group_noise_multiplier, member_noise_std
from fedledger.secagg.errors import SecAggError
from fedledger.secagg.noise import MemberNoise, noise_evident
from fedledger.secagg.protocol import GroupTranscript


@dataclass(frozen=True)
class SecureGroup:
    """One group's unmasked outcome: the members whose updates are in its sum, and their mean update."""

    members: tuple[ClientMeta, ...]
    mean: np.ndarray
    # The group's Shamir threshold: under DP each member added sigma^2 / threshold of noise variance, so
    # the sum's noise multiplier depends on it (None: unknown, refused in a DP round).
    threshold: int | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise InvalidParameter("a group with no surviving member has no sum; leave it out of the round")


@dataclass(frozen=True)
class FailedGroup:
    """A group whose sum could not be unmasked (too many dropouts, a forged share): its members' updates
    are not in the round, which is no evidence against any of them."""

    members: tuple[str, ...]
    reason: str


def unmask_groups(
    transcripts: Sequence[GroupTranscript], members: Mapping[str, ClientMeta]
) -> tuple[list[SecureGroup], list[FailedGroup]]:
    """Each group's unmasked mean with its survivors' metadata (``members`` by lowercase address), and
    the groups that could not be unmasked with the reason. One group's failure never fails the round: the
    others are scored and paid as usual (the count check then decides whether enough groups are left)."""
    unmasked: list[SecureGroup] = []
    failed: list[FailedGroup] = []
    for transcript in transcripts:
        try:
            result = transcript.unmask()
        except SecAggError as exc:
            failed.append(FailedGroup(transcript.context.members, str(exc)))
            continue
        missing = [a for a in result.survivors if a.lower() not in members]
        if missing:
            raise InvalidParameter(
                f"no metadata for surviving members {missing}; load every member's update row"
            )
        unmasked.append(
            SecureGroup(
                tuple(members[a.lower()] for a in result.survivors),
                result.mean,
                transcript.context.threshold,
            )
        )
    return unmasked, failed


def compute_secure_round(
    inputs: RoundInputs, groups: Sequence[SecureGroup], rng: np.random.Generator, now: datetime
) -> RoundResult:
    """:func:`compute_round` over group means, its decisions mapped onto the groups' members.

    ``inputs`` holds the round's settings, model and holdout with no individual update (``clients`` empty,
    ``deltas`` with no rows); ``rejected`` are members refused individually (a message that failed its
    checks), scored as in the clear mode."""
    if inputs.clients or np.asarray(inputs.deltas).size:
        raise InvalidParameter("a secure round holds no individual update: pass the groups, not clients")
    members = [m for g in groups for m in g.members]
    if len({m.address.lower() for m in members}) != len(members):
        raise InvalidParameter("a member appears in two groups; each member's update is in one group sum")
    charge: PrivacyCharge | None = None
    if inputs.params.dp is not None and groups:
        charged = privacy_charge(inputs, groups)
        if isinstance(charged, str):
            rejected = tuple((c.update_id, reason) for c, reason in inputs.rejected)
            return RoundResult(CloseStatus.failed, charged, rejected=rejected)
        charge = charged
        # The members clipped and noised before masking: the server neither clips the group means (their
        # noise is far above the clip norm) nor adds noise of its own.
        inputs = dataclasses.replace(inputs, params=dataclasses.replace(inputs.params, dp=None))
    cap = inputs.params.sample_weight_cap
    capped = SampleWeights.of(np.array([m.num_samples for m in members], dtype=np.float64), cap).capped
    claims = {m.address.lower(): float(c) for m, c in zip(members, capped, strict=True)}
    stand_ins = tuple(_stand_in(g, claims, k) for k, g in enumerate(groups))
    empty = np.asarray(inputs.deltas)
    deltas = (
        np.stack([g.mean.astype(np.float32).ravel() for g in groups])
        if groups
        else empty.reshape(0, empty.shape[1] if empty.ndim == 2 else 0)
    )
    group_result = compute_round(dataclasses.replace(inputs, clients=stand_ins, deltas=deltas), rng, now)
    if group_result.record is None:
        # Extended or failed: there is nothing per member to decide beyond the individual rejections.
        return group_result
    by_group = [
        next(o for o in group_result.clients if o.update_id == _stand_in_id(k)) for k in range(len(groups))
    ]
    group_rewards = _group_rewards(inputs, groups, by_group)
    outcomes: list[ClientOutcome] = []
    amounts: dict[str, int] = {}
    for group, outcome, reward in zip(groups, by_group, group_rewards, strict=True):
        split = split_reward(reward, [(m.address, claims[m.address.lower()]) for m in group.members])
        amounts.update({a: w for a, w in split.items() if w > 0})
        outcomes += _member_outcomes(inputs, group, outcome, split)
    tree = RewardTree.build(inputs.round_id, amounts) if amounts else None
    outcomes = [
        dataclasses.replace(o, merkle_proof=tuple("0x" + p.hex() for p in tree.proof(o.address)))
        if tree and o.reward_wei
        else o
        for o in outcomes
    ]
    outcomes += [o for o in group_result.clients if o.update_id >= 0]
    details = {**group_result.record.params, "secure_groups": len(groups), "secure_members": len(members)}
    record = dataclasses.replace(
        group_result.record,
        rewards_root="0x" + (tree.root.hex() if tree else "00" * 32),
        total_reward_wei=sum(amounts.values()),
        params=details if charge is None else {**details, **charge.details()},
        dp_noise_std=None if charge is None else charge.mean_noise_std,
        epsilon_spent=None if charge is None else charge.accountant.epsilon_spent,
    )
    return dataclasses.replace(group_result, clients=tuple(outcomes), record=record)


@dataclass(frozen=True)
class PrivacyCharge:
    """A secure round's DP accounting: each group's release is one Gaussian mechanism at the noise
    multiplier of its survivors (:func:`fedledger.privacy.group_noise_multiplier`); a member is in one group,
    so the round costs each member its own group's release, at most the worst group's, which is charged."""

    accountant: PrivacyAccountant
    worst_multiplier: float
    worst_survivors: int
    worst_threshold: int
    member_std: float
    clip_norm: float

    @property
    def mean_noise_std(self) -> float:
        """The noise std on the charged group's mean (what ``dp_noise_std`` records in the clear mode)."""
        return self.worst_multiplier * self.clip_norm / self.worst_survivors

    def details(self) -> dict[str, Detail]:
        """The accounting's figures for the round's record."""
        return {
            "dp_mode": "distributed",
            "dp_effective_noise_multiplier": self.worst_multiplier,
            "dp_worst_group_survivors": self.worst_survivors,
            "dp_worst_group_threshold": self.worst_threshold,
            "dp_member_noise_std": self.member_std,
        }


def split_noiseless(
    inputs: RoundInputs, groups: Sequence[SecureGroup]
) -> tuple[list[SecureGroup], list[FailedGroup]]:
    """Under DP, the groups whose sums carry not even one member's noise share left out, with the reason.

    Every member of such a group skipped its share (one share would show), so its sum is not private and is
    not aggregated; leaving the group out rather than failing the round keeps a group of attackers from
    stopping every round this way. A close calls this after :func:`unmask_groups`; without DP it keeps all."""
    dp = inputs.params.dp
    if dp is None:
        return list(groups), []
    kept: list[SecureGroup] = []
    noiseless: list[FailedGroup] = []
    for g in groups:
        if g.threshold is None:
            raise InvalidParameter(
                "a DP secure round needs each group's threshold (the members' noise shares depend on it)"
            )
        m = len(g.members)
        noise = MemberNoise(
            dp.clip_norm, member_noise_std(dp.noise_multiplier * dp.clip_norm, m, g.threshold)
        )
        if noise_evident(g.mean, m, noise):
            kept.append(g)
        else:
            noiseless.append(
                FailedGroup(
                    tuple(member.address for member in g.members),
                    "differential privacy is on, but this group's sum carries not even one member's share of "
                    "the noise: its members' client does not add it before masking; the sum is left out",
                )
            )
    return kept, noiseless


def privacy_charge(inputs: RoundInputs, groups: Sequence[SecureGroup]) -> PrivacyCharge | str:
    """The accountant charged with the round's worst group, or why the round must fail (over budget, or a
    group whose sum carries no noise: a close leaves those out first with :func:`split_noiseless`).

    Earlier rounds are composed at the governed multiplier (``dp_rounds_spent``): a secure round's groups
    never carry less noise than it (survivors >= threshold), so this bounds what they spent from above."""
    if inputs.params.dp is None:
        raise InvalidParameter("a privacy charge is for rounds with differential privacy on")
    kept, noiseless = split_noiseless(inputs, groups)
    if noiseless:
        return (
            f"{len(noiseless)} of {len(groups)} group sums carry no noise ({noiseless[0].reason}), so the "
            "round cannot be charged as private; update the clients or turn DP off through governance"
        )
    return _charge(inputs, [(len(g.members), g.threshold or 0) for g in kept])


def privacy_charge_before_unmasking(
    inputs: RoundInputs, transcripts: Sequence[GroupTranscript]
) -> PrivacyCharge | str | None:
    """:func:`privacy_charge` from the transcripts, before any sum is unmasked: unmasking is the release
    (the server learns each group's noised sum then, whatever the round's close decides afterwards), so a
    close checks the budget with this first and unmasks nothing when it says why not. A group with fewer
    masked inputs than its threshold releases nothing; None when no group would release a sum."""
    counts = [(len(t.masked), t.context.threshold) for t in transcripts]
    return release_charge(inputs.params, inputs.dp_rounds_spent, counts)


def release_charge(
    params: RoundParams, dp_rounds_spent: int, counts: Sequence[tuple[int, int]]
) -> PrivacyCharge | str | None:
    """:func:`privacy_charge_before_unmasking` from each group's (masked inputs, threshold) as stored, for a
    close that has not rebuilt its transcripts yet. A group with fewer masked inputs than its threshold
    releases nothing; None when no group would release a sum."""
    releases = [(m, t) for m, t in counts if m >= t]
    if not releases:
        return None
    return _charge_at(params, dp_rounds_spent, releases)


def released_charge(
    params: RoundParams, dp_rounds_spent: int, released: Sequence[SecureGroup]
) -> PrivacyCharge | None:
    """What the group sums already unmasked under DP cost, for a round that fails after unmasking them:
    the server learned them, so the accountant is charged whatever the round's fate (None without DP or
    with nothing unmasked).

    The figures are :func:`release_charge`'s over the released groups (``released``: the groups unmasked
    whose sums carry their members' noise, the set an aggregated round is charged for), but never refused:
    past the budget the charge is what was spent. (The check before unmasking charged every group that
    could be unmasked, a superset at no smaller multiplier, so it keeps this within the budget.)"""
    if params.dp is None or not released:
        return None
    releases = [(len(g.members), _threshold_of(g)) for g in released]
    return _priced(params, dp_rounds_spent, releases, refuse_over_budget=False)


def _threshold_of(group: SecureGroup) -> int:
    if group.threshold is None:
        raise InvalidParameter(
            "a DP secure round needs each group's threshold (the members' noise shares depend on it)"
        )
    return group.threshold


def _charge(inputs: RoundInputs, releases: Sequence[tuple[int, int]]) -> PrivacyCharge | str:
    return _charge_at(inputs.params, inputs.dp_rounds_spent, releases)


def _charge_at(
    params: RoundParams, dp_rounds_spent: int, releases: Sequence[tuple[int, int]]
) -> PrivacyCharge | str:
    try:
        return _priced(params, dp_rounds_spent, releases, refuse_over_budget=True)
    except PrivacyBudgetExceeded as exc:
        return str(exc)


def _priced(
    params: RoundParams,
    dp_rounds_spent: int,
    releases: Sequence[tuple[int, int]],
    *,
    refuse_over_budget: bool,
) -> PrivacyCharge:
    dp = params.dp
    if dp is None:
        raise InvalidParameter("a privacy charge is for rounds with differential privacy on")
    if not releases:
        raise InvalidParameter("a privacy charge needs at least one released group sum")
    worst, survivors, threshold = min(
        (group_noise_multiplier(dp.noise_multiplier, m, t), m, t) for m, t in releases
    )
    accountant = PrivacyAccountant(dp.noise_multiplier, 1.0, dp.delta, dp.epsilon_budget, dp_rounds_spent)
    accountant = accountant.charge(worst) if refuse_over_budget else accountant.spend(worst)
    member_std = member_noise_std(dp.noise_multiplier * dp.clip_norm, survivors, threshold)
    return PrivacyCharge(accountant, worst, survivors, threshold, member_std, dp.clip_norm)


def _group_rewards(
    inputs: RoundInputs, groups: Sequence[SecureGroup], outcomes: Sequence[ClientOutcome]
) -> list[int]:
    """Each kept group's reward: what its members would earn in the clear mode at the group's fitness and
    reputation (``k`` x one client's reward, so a member is not paid a k-th for being grouped), all of them
    scaled down together to the round budget as the clear mode's rewards are."""
    params = inputs.params
    rewards = [
        reward_amounts(
            [o.fitness], [o.reputation_after], params.base_reward * len(g.members), _NO_BUDGET, params.scoring
        )[0]
        # Kept and payable in the clear mode's round over the groups (aggregator.scoring.scores.payable: a
        # kept group whose share is significantly harmful and adds nothing new is not paid for being kept).
        if o.kept and o.reward_wei > 0
        else 0
        for g, o in zip(groups, outcomes, strict=True)
    ]
    total = sum(rewards)
    if total > params.round_reward_budget:
        rewards = [r * params.round_reward_budget // total for r in rewards]
    return rewards


# reward_amounts' budget when the budget is applied afterwards, over all groups at once.
_NO_BUDGET = 2**256 - 1


def split_reward(total: int, claims: Sequence[tuple[str, float]]) -> dict[str, int]:
    """``total`` wei split in proportion to ``claims`` (address, capped claim): floors, then one wei each to
    the largest remainders (ties by address), so the parts sum to ``total`` exactly."""
    if total == 0 or not claims:
        return {a: 0 for a, _ in claims}
    # Exact rationals: token amounts reach 1e20 wei, far past float64's 2^53.
    weight = sum(Fraction(c) for _, c in claims)
    if weight <= 0:
        raise InvalidParameter("a paid group needs a positive sample claim")
    exact = [(a, total * Fraction(c) / weight) for a, c in claims]
    parts = {a: math.floor(x) for a, x in exact}
    short = total - sum(parts.values())
    for a, _ in sorted(exact, key=lambda ax: (-(ax[1] - math.floor(ax[1])), ax[0].lower()))[:short]:
        parts[a] += 1
    return parts


def _stand_in_id(k: int) -> int:
    # Negative ids never collide with update rows, so the group outcomes are told apart from rejections.
    return -(k + 1)


def _stand_in(group: SecureGroup, claims: dict[str, float], k: int) -> ClientMeta:
    return ClientMeta(
        update_id=_stand_in_id(k),
        participant_id=_stand_in_id(k),
        # A placeholder payee for compute_round's own tree, which is rebuilt over the members.
        address="0x" + f"{k + 1:040x}",
        num_samples=max(1, round(sum(claims[m.address.lower()] for m in group.members))),
        submitted_at=max(m.submitted_at for m in group.members),
        reputation=min(m.reputation for m in group.members),
    )


def _member_outcomes(
    inputs: RoundInputs, group: SecureGroup, outcome: ClientOutcome, split: dict[str, int]
) -> list[ClientOutcome]:
    size = len(group.members)
    config = inputs.params.reputation
    shared = dataclasses.replace(config, byzantine_penalty=config.byzantine_penalty / size)
    before = np.array([m.reputation for m in group.members], dtype=np.float64)
    # The group's reputation (its members' lowest) rose in the clear round only if the group added
    # something (aggregator.scoring.reputation.update_reputation); its members' follow it.
    rose = outcome.reputation_after > float(before.min())
    after = update_reputation(
        before,
        np.full(size, outcome.fitness),
        np.full(size, outcome.byzantine, dtype=bool),
        shared,
        np.full(size, rose),
    )
    against_sum = [f for f in outcome.evidence if f.code is not Evidence.below_min_reputation]
    shared_evidence: tuple[Finding, ...] = ()
    if against_sum:
        found = "; ".join(f"{f.code.value}: {f.detail}" if f.detail else f.code.value for f in against_sum)
        shared_evidence = (Finding(Evidence.group_flagged, f"group of {size}: {found}"),)
    floor = inputs.params.min_reputation
    reason = None
    if outcome.excluded_reason is not None:
        reason = f"your secure-aggregation group of {size} was not kept: {outcome.excluded_reason}"
    return [
        dataclasses.replace(
            outcome,
            update_id=m.update_id,
            participant_id=m.participant_id,
            address=m.address,
            reward_wei=split[m.address],
            merkle_proof=(),
            reputation_after=float(after[i]),
            reputation_before=float(m.reputation),
            evidence=shared_evidence
            + (
                (Finding(Evidence.below_min_reputation, f"{m.reputation:g} < {floor:g}"),)
                if m.reputation < floor
                else ()
            ),
            excluded_reason=reason,
        )
        for i, m in enumerate(group.members)
    ]
