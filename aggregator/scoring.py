"""Proof of Useful Work: per-client quality, timeliness, honesty, fitness, and reward amounts.

All scores are on 0..100. Every constant is a field of :class:`ScoringConfig`, built from the chain's
governed parameters by the service; nothing here reads the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import numpy as np

from aggregator.errors import InvalidParameter


@dataclass(frozen=True)
class ScoringConfig:
    weight_quality: float = 0.4
    weight_timeliness: float = 0.3
    weight_honesty: float = 0.3
    # Timeliness falls linearly from 100 at the round's opening to this at its deadline.
    timeliness_at_deadline: float = 50.0
    # Honesty: distance to the robust consensus relative to the round's median distance. Up to
    # ``honesty_tolerance`` times the typical distance earns full honesty, ``honesty_cutoff`` times none.
    honesty_tolerance: float = 2.0
    honesty_cutoff: float = 4.0
    # (minimum fitness, reward multiplier), highest first.
    reward_tiers: tuple[tuple[float, float], ...] = ((90, 2.0), (80, 1.5), (70, 1.0), (60, 0.5))
    reputation_multiplier_base: float = 0.5

    def __post_init__(self) -> None:
        total = self.weight_quality + self.weight_timeliness + self.weight_honesty
        if abs(total - 1.0) > 1e-9:
            raise InvalidParameter(f"fitness weights must sum to 1, got {total}")
        if not 0 < self.honesty_tolerance < self.honesty_cutoff:
            raise InvalidParameter("need 0 < honesty_tolerance < honesty_cutoff")
        if not 0 <= self.timeliness_at_deadline <= 100:
            raise InvalidParameter("timeliness_at_deadline must be in [0, 100]")
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
    return np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))


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
    for minimum, multiplier in tiers:
        if fitness >= minimum:
            return multiplier
    return 0.0


def reward_amounts(
    fitness: np.ndarray | list[float],
    reputation: np.ndarray | list[float],
    base_reward: int,
    round_budget: int,
    config: ScoringConfig = ScoringConfig(),
) -> list[int]:
    """Token wei per client: base x fitness multiplier x (base multiplier + reputation / 100).

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
        multiplier = Decimal(repr(fitness_multiplier(fit, config.reward_tiers)))
        rep_multiplier = Decimal(repr(config.reputation_multiplier_base)) + Decimal(repr(r)) / 100
        amounts.append(
            int((Decimal(base_reward) * multiplier * rep_multiplier).to_integral_value(ROUND_FLOOR))
        )
    total = sum(amounts)
    if total > round_budget:
        amounts = [a * round_budget // total for a in amounts]
    return amounts
