"""Proof of Useful Work: per-client quality, timeliness, honesty, fitness, and reward amounts.

All scores are on 0..100. Every constant is a field of :class:`ScoringConfig`, built from the chain's
governed parameters by the service; nothing here reads the chain.

The scores measure useful work against what the server trusts, not closeness to the crowd:

- quality (:func:`novelty_quality`, the round's; :func:`contribution_quality` for a plain leave-one-out
  gain): the validation value of what the client's update adds (``aggregator.scoring.novelty``), relative
  to the round's median value;
- honesty (:func:`reference_honesty`): agreement of the update's direction with the server's reference
  update, relative to the round's median agreement, and a plausible norm;
- timeliness (:func:`window_timeliness`): full inside the submission window, whenever in it; arriving
  first earns nothing, so not training cannot win it.
Relative to the round's median (which fewer than half the clients cannot move) so that late rounds with
small absolute gains, and heterogeneous data, are not punished.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from statistics import NormalDist

import numpy as np

from aggregator.errors import InvalidParameter
from fedledger.chain.param_table import genesis_real


@dataclass(frozen=True)
class ScoringConfig:
    """Weights and shapes of the contribution scores (quality, timeliness, honesty) and of the rewards."""

    # Governed (a round's values: aggregator.round.params.RoundParams); the defaults are the genesis values.
    weight_quality: float = genesis_real("weight_quality")
    weight_timeliness: float = genesis_real("weight_timeliness")
    weight_honesty: float = genesis_real("weight_honesty")
    # Timeliness falls linearly from 100 at the round's opening to this at its deadline.
    timeliness_at_deadline: float = 50.0
    # Honesty: distance to the robust consensus relative to the round's median distance. Up to
    # ``honesty_tolerance`` times the typical distance earns full honesty, ``honesty_cutoff`` times none.
    honesty_tolerance: float = 2.0
    honesty_cutoff: float = 4.0
    # (minimum fitness, reward multiplier), highest first.
    reward_tiers: tuple[tuple[float, float], ...] = tuple(
        (genesis_real(f"tier{i}_min_fitness"), genesis_real(f"tier{i}_multiplier")) for i in range(1, 5)
    )
    reputation_multiplier_base: float = genesis_real("reputation_multiplier_base")
    # Quality: a marginal contribution of ``quality_share`` x the round's median contribution earns 100.
    # ``quality_floor`` (relative to the validation loss) is the contribution size below which differences
    # are noise: when the whole round contributes less (a converged model), nobody is ranked by noise.
    quality_share: float = 0.25
    quality_floor: float = 1e-3
    # Honesty: a cosine to the reference of ``honesty_share`` x the round's median cosine, at most
    # ``honesty_full_cosine``, earns 100; a norm
    # up to ``norm_tolerance`` x the round's median norm is plausible, ``norm_cutoff`` x or more earns 0.
    honesty_share: float = 0.25
    # The highest cosine full direction credit may require (issue 20, 50 % attackers): the round's median
    # cosine is the attackers' to set when they are half the round (a row at cosine 0.5 each raised it
    # until honest rows at 0.01-0.1, the typical late-round cosine, lost honesty and with it the lowest
    # paid tier). 0: an update not pointing away from the reference gets full credit whatever the median.
    honesty_full_cosine: float = 0.0
    # Cosines between this (at or below: no direction credit) and the full-credit cosine earn partial
    # credit: near a converged model honest updates scatter around the reference's direction.
    honesty_cosine_floor: float = -0.2
    # Allowances for what the server's data cannot resolve. Quality: a contribution not significantly below
    # full credit earns it, at family-wise level ``quality_alpha`` over the round's clients (one-sided,
    # Bonferroni: n clients are tested each round, and at a per-client level one honest client in twenty
    # would be docked for noise every round). Honesty: a cosine within ``honesty_z`` robust spreads of the
    # round's cosines.
    quality_alpha: float = 0.05
    honesty_z: float = 2.0
    # Quality from an update's novel part (aggregator.scoring.novelty): the allowance in standard errors,
    # each capped at the round's median error (see novelty_quality).
    novelty_z: float = 2.0
    norm_tolerance: float = 3.0
    norm_cutoff: float = 10.0

    def __post_init__(self) -> None:
        total = self.weight_quality + self.weight_timeliness + self.weight_honesty
        if abs(total - 1.0) > 1e-9:
            raise InvalidParameter(f"fitness weights must sum to 1, got {total}")
        if not 0 < self.honesty_tolerance < self.honesty_cutoff:
            raise InvalidParameter("need 0 < honesty_tolerance < honesty_cutoff")
        if not 0 <= self.timeliness_at_deadline <= 100:
            raise InvalidParameter("timeliness_at_deadline must be in [0, 100]")
        if not (self.quality_share > 0 and self.quality_floor >= 0 and 0 < self.honesty_share <= 1):
            raise InvalidParameter("need quality_share > 0, quality_floor >= 0, honesty_share in (0, 1]")
        if not (0 < self.quality_alpha < 1 and self.honesty_z >= 0 and self.novelty_z >= 0):
            raise InvalidParameter("need quality_alpha in (0, 1), honesty_z >= 0 and novelty_z >= 0")
        if not 1 <= self.norm_tolerance < self.norm_cutoff:
            raise InvalidParameter("need 1 <= norm_tolerance < norm_cutoff")
        minimums = [m for m, _ in self.reward_tiers]
        if minimums != sorted(minimums, reverse=True):
            raise InvalidParameter("reward tiers must be ordered from the highest minimum fitness down")


def quality_scores(previous_loss: float, client_losses: np.ndarray | list[float]) -> np.ndarray:
    """How much each client's own update improves the previous model's holdout loss.

    r_i = (L_prev - L_i) / L_prev is the relative improvement of the previous model plus client i's update.
    Scaled by the round's best improvement s = max(max_j r_j, 1e-12): the best client scores 100, an
    update that changes nothing scores 50, one that degrades the model by s or more scores 0. Relative to
    the round, so late rounds with small absolute gains are not punished. A non-finite loss scores 0.
    """
    losses = np.asarray(client_losses, dtype=np.float64)
    if not np.isfinite(previous_loss) or previous_loss <= 0:
        raise InvalidParameter(f"previous holdout loss must be finite and positive, got {previous_loss}")
    r = (previous_loss - losses) / previous_loss
    finite = np.isfinite(r)
    scale = max(float(r[finite].max()) if finite.any() else 0.0, 1e-12)
    q = 100.0 * np.clip(0.5 + 0.5 * np.where(finite, r, -np.inf) / scale, 0.0, 1.0)
    return q


def timeliness_scores(
    submitted_at: np.ndarray | list[float], opened_at: float, deadline: float, at_deadline: float = 50.0
) -> np.ndarray:
    """100 for an update at the round's opening, falling linearly to ``at_deadline`` at the deadline."""
    if deadline <= opened_at:
        raise InvalidParameter(f"deadline {deadline} must be after the opening {opened_at}")
    t = np.asarray(submitted_at, dtype=np.float64)
    fraction = np.clip((t - opened_at) / (deadline - opened_at), 0.0, 1.0)
    return 100.0 - (100.0 - at_deadline) * fraction


def consensus_distances(X: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``X`` to the consensus vector (one pass, float64 accumulation)."""
    diff = X - consensus[None, :]
    distances: np.ndarray = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
    return distances


def honesty_scores(
    distances: np.ndarray | list[float],
    valid: np.ndarray | list[bool] | None = None,
    tolerance: float = 2.0,
    cutoff: float = 4.0,
) -> np.ndarray:
    """Agreement with the robust consensus, scale-aware.

    Each distance is divided by the round's median distance among valid updates (the typical distance), so
    the same rule holds for a 10-parameter and a 10M-parameter model and for tight or loose rounds: ratio
    <= ``tolerance`` scores 100, ratio >= ``cutoff`` scores 0, linear between. Updates that failed
    validation score 0.
    """
    d = np.asarray(distances, dtype=np.float64)
    ok = np.ones(d.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if d.shape != ok.shape:
        raise InvalidParameter("distances and validity flags differ in length")
    if not np.isfinite(d[ok]).all() or (d[ok] < 0).any():
        raise InvalidParameter("distances of valid updates must be finite and non-negative")
    h = np.zeros(d.shape)
    if not ok.any():
        return h
    typical = float(np.median(d[ok]))
    # All valid updates identical to the consensus: nobody deviates.
    if typical <= 0.0:
        h[ok] = np.where(d[ok] <= 0.0, 100.0, 0.0)
        return h
    ratio = d[ok] / typical
    h[ok] = 100.0 * np.clip((cutoff - ratio) / (cutoff - tolerance), 0.0, 1.0)
    return h


def robust_spread(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the standard deviation of normal data, and unmoved by any
    minority of outliers (fewer than half the values), so attackers cannot widen it at will."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def significance_z(alpha: float, tests: int) -> float:
    """The one-sided normal quantile for family-wise level ``alpha`` over ``tests`` tests (Bonferroni)."""
    if not (0 < alpha < 1 and tests >= 1):
        raise InvalidParameter(f"need alpha in (0, 1) and at least one test, got {alpha}, {tests}")
    return NormalDist().inv_cdf(1.0 - alpha / tests)


def contribution_quality(
    marginal: np.ndarray | list[float],
    loss: float,
    share: float = 0.25,
    floor: float = 1e-4,
    stderr: np.ndarray | list[float] | None = None,
    z: float = 2.0,
) -> np.ndarray:
    """Quality from marginal contributions m_i (validation-loss units, positive = useful).

    q_i = 100 * clip((u_i + e) / (share * M + e), 0, 1) with u_i = m_i + z * se_i the upper confidence
    bound of the contribution (``stderr`` se_i over the validation examples), M = max(median m, 0) and
    e = floor * loss. A contribution not significantly below ``share`` x the round's median scores 100, one
    significantly harmful (u_i <= -e) 0. Clients are ranked only by differences the validation set
    resolves: late in training honest contributions differ by less than their standard errors, and paying
    those differences would pay the validation set's sampling noise. Without standard errors (a loss
    function that gives only the mean) the noise level e alone decides, and when every contribution is
    below it (a converged model) the scores tend to 100 for everyone not harmful instead of ranking noise.
    """
    m = np.asarray(marginal, dtype=np.float64)
    if not (np.isfinite(loss) and loss > 0):
        raise InvalidParameter(f"the validation loss must be finite and positive, got {loss}")
    if m.size == 0:
        return m
    if np.isnan(m).any():
        raise InvalidParameter("marginal contributions must not be NaN")
    se = np.zeros_like(m) if stderr is None else np.asarray(stderr, dtype=np.float64)
    if se.shape != m.shape or not (np.isfinite(se).all() and (se >= 0).all()):
        raise InvalidParameter("one finite, non-negative standard error per contribution is needed")
    if not z >= 0:
        raise InvalidParameter(f"the confidence multiplier z must be non-negative, got {z}")
    finite = m[np.isfinite(m)]
    typical = max(float(np.median(finite)) if finite.size else 0.0, 0.0)
    e = floor * loss
    upper = m + z * se
    if share * typical + e <= 0:
        return np.where(upper >= 0, 100.0, 0.0)
    with np.errstate(invalid="ignore"):
        ratio = (upper + e) / (share * typical + e)
    return 100.0 * np.clip(np.nan_to_num(ratio, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def capped_allowance(
    value: np.ndarray, stderr: np.ndarray | list[float] | None = None, z: float = 2.0
) -> np.ndarray:
    """z x min(se_i, median se) per value: the allowance for what the validation set cannot resolve, each
    standard error capped at the round's median (:func:`novelty_quality` credits up to it,
    :func:`resolved_gains` asks for a value beyond it). ``stderr`` None: no errors, no allowance."""
    v = np.asarray(value, dtype=np.float64)
    se = np.zeros_like(v) if stderr is None else np.asarray(stderr, dtype=np.float64)
    if se.shape != v.shape or not (np.isfinite(se).all() and (se >= 0).all()):
        raise InvalidParameter("one finite, non-negative standard error per value is needed")
    if se.size == 0:
        return se
    allowance: np.ndarray = z * np.minimum(se, float(np.median(se)))
    return allowance


def novelty_quality(
    value: np.ndarray | list[float],
    loss: float,
    share: float = 0.25,
    floor: float = 1e-3,
    stderr: np.ndarray | list[float] | None = None,
    z: float = 2.0,
) -> np.ndarray:
    """Quality from the validation value v_i of what each update adds (its novel part,
    :mod:`aggregator.scoring.novelty`) and its standard error se_i over the validation examples.

    q_i = 100 * clip(u_i / max(share * M, floor * loss), 0, 1), u_i = v_i + z * min(se_i, median se), M the
    round's median value: a value not significantly below ``share`` x the median earns full credit,
    nothing or harm none; when the whole round adds less than the noise level ``floor`` x loss, credit is
    in proportion to it. The allowance uses the round's typical resolution, capped: a row cannot buy a
    larger allowance by adding noise to a copy (the noise widens its own error, not its value), and a copy
    (its novel part about 0) has no error and no allowance, so it never earns credit by a value below the
    noise level. A difference of two validation losses: a batched evaluation, one model at a time and a
    sharded close agree on it to float32 rounding of the logits, measured up to 0.008 points."""
    v = np.asarray(value, dtype=np.float64)
    if not (np.isfinite(loss) and loss > 0):
        raise InvalidParameter(f"the validation loss must be finite and positive, got {loss}")
    if not (share > 0 and floor > 0 and z >= 0):
        raise InvalidParameter(f"need share > 0, floor > 0 and z >= 0, got {share}, {floor}, {z}")
    if v.size == 0:
        return v
    if np.isnan(v).any():
        raise InvalidParameter("values must not be NaN")
    allowance = capped_allowance(v, stderr, z)
    finite = v[np.isfinite(v)]
    typical = float(np.median(finite)) if finite.size else 0.0
    full = max(share * typical, floor * loss)
    upper = v + allowance
    q: np.ndarray = 100.0 * np.clip(np.nan_to_num(upper / full, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return q


def resolved_gains(
    value: np.ndarray | list[float], stderr: np.ndarray | list[float] | None = None, z: float = 2.0
) -> np.ndarray:
    """Which values v_i (what each update adds on the validation data, :func:`novelty_quality`'s measure)
    are resolvably positive: v_i - z x min(se_i, median se) > 0, the lower end of the interval whose upper
    end quality credits (:func:`capped_allowance`, the same for both). Non-finite values are not resolved."""
    v = np.asarray(value, dtype=np.float64)
    allowance = capped_allowance(v, stderr, z)
    if not z >= 0:
        raise InvalidParameter(f"the confidence multiplier z must be non-negative, got {z}")
    lower = v - allowance
    shown: np.ndarray = np.isfinite(lower) & (lower > 0)
    return shown


def typical_norm(norms: np.ndarray, floor: float = 0.0) -> float:
    """The round's typical update norm: the median of ``norms`` (float64), floored at ``floor`` (the server's
    reference norm; a non-finite floor counts as none), 0 for no norms. Half the wallets sending near-zero
    updates can drag the median down until honest norms look inflated; they cannot shrink the server's
    step. Both honesty's scale (:func:`reference_honesty`) and the norm evidence
    (:func:`aggregator.scoring.reputation.norm_evidence`) measure against it."""
    median = float(np.median(norms)) if norms.size else 0.0
    return max(median, floor if np.isfinite(floor) else 0.0)


def reference_honesty(
    cosine: np.ndarray | list[float],
    norms: np.ndarray | list[float],
    share: float = 0.25,
    norm_tolerance: float = 3.0,
    norm_cutoff: float = 10.0,
    cosine_floor: float = 0.0,
    z: float = 0.0,
    full_cap: float | None = None,
    norm_floor: float = 0.0,
) -> np.ndarray:
    """Honesty: agreement with the server's reference direction, scale-aware.

    Direction: 100 * clip((cos_i + z * s - floor) / (full - floor), 0, 1) with full = share * max(median
    cos, 0) and s the round's robust spread of cosines (:func:`robust_spread`): a cosine not significantly
    below the full-credit one earns full credit, at or below ``cosine_floor`` (less the same allowance)
    none. Honest updates scatter around the reference's direction, widely on non-IID data and near a
    converged model; an update pointing away from it by more than that scatter loses credit. If the
    round's median cosine is not positive, any cosine above the floor earns full direction credit (the
    reference itself is then the outlier, not the clients). Scale: the norm relative to the round's median
    norm; up to ``norm_tolerance`` x is full credit, ``norm_cutoff`` x or more none (log-linear between),
    so a 100x boosted update scores 0 whatever its direction. Honesty is the product.

    What half the round can move is bounded by what the server knows (issue 20, 50 % attackers):
    ``full_cap`` caps the full-credit cosine (attackers at a high cosine raise the median), and
    ``norm_floor`` (the server's reference norm) floors the typical norm (attackers sending tiny updates
    drag the median down until honest norms look inflated), as :func:`aggregator.scoring.reputation.
    norm_evidence` floors it.
    """
    cos = np.asarray(cosine, dtype=np.float64)
    nrm = np.asarray(norms, dtype=np.float64)
    if cos.shape != nrm.shape:
        raise InvalidParameter("one norm per cosine is needed")
    if cos.size == 0:
        return cos
    if not np.isfinite(cos).all() or (np.abs(cos) > 1 + 1e-9).any():
        raise InvalidParameter("cosines must be finite and in [-1, 1]")
    if np.isnan(nrm).any() or (nrm < 0).any():
        raise InvalidParameter("norms must be non-negative")
    if not z >= 0:
        raise InvalidParameter(f"the spread multiplier z must be non-negative, got {z}")
    typical = float(np.median(cos))
    full = max(share * typical, 0.0)
    if full_cap is not None:
        full = min(full, full_cap)
    shifted = cos + z * robust_spread(cos)
    if full > cosine_floor:
        direction = np.clip((shifted - cosine_floor) / (full - cosine_floor), 0.0, 1.0)
    else:
        direction = (shifted > cosine_floor).astype(np.float64)
    median_norm = typical_norm(nrm, norm_floor)
    if median_norm > 0 and np.isfinite(median_norm):
        with np.errstate(divide="ignore"):
            log_ratio = np.log(np.maximum(nrm, 1e-300) / median_norm)
        span = np.log(norm_cutoff) - np.log(norm_tolerance)
        scale = np.clip((np.log(norm_cutoff) - log_ratio) / span, 0.0, 1.0)
    else:
        scale = np.ones_like(nrm)
    honesty: np.ndarray = 100.0 * direction * scale
    return honesty


def window_timeliness(
    submitted_at: np.ndarray | list[float], deadline: float, late_score: float = 50.0
) -> np.ndarray:
    """100 for an update inside the submission window (however early), ``late_score`` after the deadline.

    No bonus for arriving first: an attacker who skips training would always win it, and an honest
    organization with more data would always lose it.
    """
    if not 0 <= late_score <= 100:
        raise InvalidParameter(f"late_score must be in [0, 100], got {late_score}")
    t = np.asarray(submitted_at, dtype=np.float64)
    return np.where(t <= deadline, 100.0, late_score)


def fitness_scores(
    quality: np.ndarray, timeliness: np.ndarray, honesty: np.ndarray, config: ScoringConfig = ScoringConfig()
) -> np.ndarray:
    """F = w_Q Q + w_T T + w_H H (0.4 / 0.3 / 0.3 by default)."""
    return (
        config.weight_quality * np.asarray(quality, dtype=np.float64)
        + config.weight_timeliness * np.asarray(timeliness, dtype=np.float64)
        + config.weight_honesty * np.asarray(honesty, dtype=np.float64)
    )


def fitness_multiplier(fitness: float, tiers: tuple[tuple[float, float], ...]) -> float:
    """Reward multiplier: the top tier's at or above its minimum, linear between adjacent tiers' minimums,
    the lowest tier's at its minimum and 0 below it.

    Linear between tiers, not a step: with steps two organizations doing the same work at fitness 89.9
    and 90.0 would be paid 1.5 and 2.0, a 33 % difference from score noise.
    """
    if not tiers or fitness < tiers[-1][0]:
        return 0.0
    if fitness >= tiers[0][0]:
        return tiers[0][1]
    for (hi_min, hi_mult), (lo_min, lo_mult) in zip(tiers, tiers[1:], strict=False):
        if fitness >= lo_min:
            if hi_min == lo_min:
                return hi_mult
            return lo_mult + (hi_mult - lo_mult) * (fitness - lo_min) / (hi_min - lo_min)
    return tiers[-1][1]


_MULTIPLIER_STEP = Decimal("0.000001")


def _multiplier(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(_MULTIPLIER_STEP, rounding=ROUND_HALF_EVEN)


def payable(
    eligible: np.ndarray | list[bool],
    flagged: np.ndarray | list[bool],
    quality: np.ndarray | list[float],
    kept: np.ndarray | list[bool] | None = None,
    marginal: np.ndarray | list[float] | None = None,
    stderr: np.ndarray | list[float] | None = None,
    z: float = 2.0,
) -> np.ndarray:
    """Which updates a round pays (by :func:`reward_amounts`): an eligible update without evidence that
    adds something: something new (quality > 0, :func:`novelty_quality`), or, when the strategy ``kept``
    it, a share not significantly harmful to the round's aggregate: its leave-one-out ``marginal`` gain on
    the validation data plus ``z`` x min(its ``stderr``, the kept rows' median standard error) is positive
    (the allowance quality has, capped the same way so that noise buys none). Without ``kept`` and
    ``marginal``: quality alone.

    Why a kept row is not paid for being kept (issue 20, 50 % attackers): timeliness and honesty are the
    attackers' to take (inside the window, a cosine and a norm the scores accept), and together they make
    a fitness of ``weight_timeliness + weight_honesty`` = 60, the lowest tier's minimum. Five identical
    rows of ten (the orthogonal attack) add nothing new (quality 0) and their shares harm the aggregate;
    the guarded rule kept them every round, and so they were paid that tier while honest rows left out
    with nothing resolvable to add were not: 1.14x the median honest organization (synthetic
    Dirichlet(0.5), seed 2). Whether the rule keeps a row is the attackers' to decide when they are half
    the round; what it adds on the server's validation data is not. A kept honest row whose novel part is
    below the validation set's resolution but whose share helps (rows that agree with each other, IID) is
    still paid, unless its share is significantly harmful."""
    ok = np.asarray(eligible, dtype=bool)
    bad = np.asarray(flagged, dtype=bool)
    q = np.asarray(quality, dtype=np.float64)
    if not (ok.shape == bad.shape == q.shape):
        raise InvalidParameter("one eligibility flag, evidence flag and quality per update is needed")
    if np.isnan(q).any():
        raise InvalidParameter("quality must not be NaN")
    adds = q > 0
    if kept is not None or marginal is not None:
        if kept is None or marginal is None:
            raise InvalidParameter("a kept row's marginal gain needs both kept and marginal")
        inside = np.asarray(kept, dtype=bool)
        m = np.nan_to_num(np.asarray(marginal, dtype=np.float64), nan=-np.inf)
        se = np.zeros(m.shape) if stderr is None else np.asarray(stderr, dtype=np.float64)
        if not (inside.shape == m.shape == se.shape == q.shape):
            raise InvalidParameter("one kept flag, marginal gain and standard error per update is needed")
        if not (np.isfinite(se).all() and (se >= 0).all() and z >= 0):
            raise InvalidParameter("standard errors must be finite and non-negative, and z non-negative")
        typical = float(np.median(se[inside])) if inside.any() else 0.0
        adds |= inside & (m + z * np.minimum(se, typical) > 0)
    paid: np.ndarray = ok & ~bad & adds
    return paid


def reward_amounts(
    fitness: np.ndarray | list[float],
    reputation: np.ndarray | list[float],
    base_reward: int,
    round_budget: int,
    config: ScoringConfig = ScoringConfig(),
) -> list[int]:
    """Token wei per client: base x fitness multiplier x (base multiplier + reputation / 100).

    The fitness multiplier is :func:`fitness_multiplier` (linear between the governed tiers).

    Integer arithmetic (Decimal, floored) so amounts are exact on-chain values. If the total would exceed
    the governed round budget, every reward is scaled down by the same factor (floored), because the
    contract refuses a round over budget and an over-budget round should still pay fairly.
    """
    if base_reward < 0 or round_budget < 0:
        raise InvalidParameter("base reward and round budget must be non-negative")
    f = np.asarray(fitness, dtype=np.float64)
    rep = np.asarray(reputation, dtype=np.float64)
    if f.shape != rep.shape:
        raise InvalidParameter("one reputation per fitness score is needed")
    amounts: list[int] = []
    for fit, r in zip(f.tolist(), rep.tolist(), strict=True):
        # Scores are floats: 0.1 + 0.2 is 0.30000000000000004, and its last digits would be paid as wei
        # (267.23200000000002 tokens). A multiplier to 1e-6 is finer than any score means.
        multiplier = _multiplier(fitness_multiplier(fit, config.reward_tiers))
        rep_multiplier = _multiplier(config.reputation_multiplier_base + r / 100)
        amounts.append(
            int((Decimal(base_reward) * multiplier * rep_multiplier).to_integral_value(ROUND_FLOOR))
        )
    total = sum(amounts)
    if total > round_budget:
        amounts = [a * round_budget // total for a in amounts]
    return amounts
