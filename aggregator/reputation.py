"""Reputation, Byzantine detection counts and slashing decisions after a scored round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from aggregator.errors import InvalidParameter


class SlashReason(StrEnum):
    low_fitness = "low_fitness"
    low_honesty = "low_honesty"
    byzantine = "byzantine"
    inactive = "inactive"


@dataclass(frozen=True)
class ReputationConfig:
    # Exponential moving average: reputation moves this far toward the round's fitness.
    learning_rate: float = 0.2
    # A detected Byzantine update costs this many reputation points on top of the average.
    byzantine_penalty: float = 20.0
    # Honesty below this marks the update as a Byzantine detection.
    byzantine_honesty_below: float = 1e-9
    slash_fitness_below: float = 50.0
    slash_honesty_below: float = 50.0
    byzantine_threshold: int = 3
    activity_timeout: float = 7 * 24 * 3600.0
    slash_fraction: float = 0.1
    min_reputation: float = 10.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReputationConfig:
        """The governed values of a round's parameter snapshot (``rounds.params``)."""
        return cls(
            slash_fitness_below=float(params["slash_fitness_below"]),
            slash_honesty_below=float(params["slash_honesty_below"]),
            byzantine_threshold=int(params["byzantine_threshold"]),
            slash_fraction=float(params["slash_fraction"]),
            min_reputation=float(params["min_reputation"]),
        )

    def __post_init__(self) -> None:
        if not 0 < self.learning_rate <= 1:
            raise InvalidParameter(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0 <= self.slash_fraction <= 1:
            raise InvalidParameter(f"slash_fraction must be in [0, 1], got {self.slash_fraction}")


def detect_byzantine(honesty: np.ndarray, config: ReputationConfig = ReputationConfig()) -> np.ndarray:
    """Boolean mask of updates counted as Byzantine detections (honesty at zero: far beyond the round's
    typical distance, or failed validation)."""
    return np.asarray(honesty, dtype=np.float64) < config.byzantine_honesty_below


def update_reputation(
    reputation: np.ndarray,
    fitness: np.ndarray,
    byzantine: np.ndarray,
    config: ReputationConfig = ReputationConfig(),
) -> np.ndarray:
    """New reputations (0..100): EMA toward the round's fitness, minus the penalty for a detection."""
    rep = np.asarray(reputation, dtype=np.float64)
    new = (1 - config.learning_rate) * rep + config.learning_rate * np.asarray(fitness, dtype=np.float64)
    new = new - config.byzantine_penalty * np.asarray(byzantine, dtype=bool)
    return np.clip(new, 0.0, 100.0)


@dataclass(frozen=True)
class SlashDecision:
    index: int
    reason: SlashReason
    amount: int


def slashing_decisions(
    fitness: np.ndarray,
    honesty: np.ndarray,
    byzantine_counts: np.ndarray,
    stakes: list[int],
    seconds_since_active: np.ndarray | None = None,
    config: ReputationConfig = ReputationConfig(),
) -> list[SlashDecision]:
    """One decision per client to slash, with the first reason that applies (a client is slashed once per
    round) and ``slash_fraction`` of its stake, floored to token wei."""
    fitness = np.asarray(fitness, dtype=np.float64)
    n = fitness.shape[0]
    idle = np.zeros(n) if seconds_since_active is None else np.asarray(seconds_since_active, dtype=np.float64)
    if not (len(honesty) == len(byzantine_counts) == len(stakes) == idle.shape[0] == n):
        raise InvalidParameter("every per-client input needs one entry per client")
    fraction_ppm = round(config.slash_fraction * 1_000_000)
    decisions: list[SlashDecision] = []
    for i in range(n):
        reason = None
        if byzantine_counts[i] >= config.byzantine_threshold:
            reason = SlashReason.byzantine
        elif honesty[i] < config.slash_honesty_below:
            reason = SlashReason.low_honesty
        elif fitness[i] < config.slash_fitness_below:
            reason = SlashReason.low_fitness
        elif idle[i] > config.activity_timeout:
            reason = SlashReason.inactive
        if reason is not None:
            decisions.append(SlashDecision(i, reason, stakes[i] * fraction_ppm // 1_000_000))
    return decisions


def eligible(reputation: np.ndarray, config: ReputationConfig = ReputationConfig()) -> np.ndarray:
    """Clients whose reputation still admits them to rounds."""
    return np.asarray(reputation, dtype=np.float64) >= config.min_reputation
