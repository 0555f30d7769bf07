"""Small synthetic rounds for the pure round computation's tests: a softmax model (or an MLP) on three
Gaussian blobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from aggregator.round.compute import ClientMeta, RoundInputs
from aggregator.round.params import RoundParams
from fedledger.models import init_mlp, init_softmax, train
from fedledger.payload import flatten

OPENED = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = OPENED + timedelta(hours=1)
NOW = DEADLINE
FEATURES, CLASSES = 4, 3


def snapshot(**overrides: Any) -> dict[str, Any]:
    """A round's parameter snapshot as open_round stores it, with the chain's genesis values."""
    values: dict[str, Any] = {
        "base_reward": str(100 * 10**18),
        "min_stake": str(100 * 10**18),
        "min_reputation": 10.0,
        "slash_fraction": 0.1,
        "byzantine_threshold": 3,
        "activity_timeout": 604800,
        "weight_quality": 0.4,
        "weight_timeliness": 0.3,
        "weight_honesty": 0.3,
        "reputation_influence_cap": 0.8,
        "strategy": "trimmed_mean",
        "weighting": "samples",
        "trim_fraction": 0.2,
        "krum_f": 1,
        "multi_krum_m": 0,
        "dp_enabled": False,
        "dp_clip_norm": 1.0,
        "dp_noise_multiplier": 1.0,
        "dp_epsilon_budget": 10.0,
        "dp_delta": 1e-5,
        "round_duration": 3600,
        "quorum": 3,
        "min_participants": 3,
        "rollback_threshold": 0.05,
        "round_reward_budget": str(10_000 * 10**18),
        "unbonding_period": 86400,
        "reputation_multiplier_base": 0.5,
        "max_round_extensions": 1,
        "reward_tiers": [[90.0, 2.0], [80.0, 1.5], [70.0, 1.0], [60.0, 0.5]],
    }
    values.update(overrides)
    return values


def blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], dtype=np.float32)
    y = rng.integers(0, CLASSES, n)
    X = (centres[y] + rng.standard_normal((n, FEATURES))).astype(np.float32)
    return X, y


class Federation:
    """A base model, a holdout, and honest updates (one local epoch each on fresh data)."""

    def __init__(self, seed: int = 0, family: str = "softmax", hidden: int = 8) -> None:
        self.rng = np.random.default_rng(seed)
        self.weights = (
            init_softmax(FEATURES, CLASSES)
            if family == "softmax"
            else init_mlp(FEATURES, hidden, CLASSES, np.random.default_rng([seed, 1]))
        )
        self.spec = {name: list(t.shape) for name, t in self.weights.items()}
        self.holdout = blobs(300, self.rng)
        self.base = flatten(self.weights, self.spec)

    def honest(self, n: int) -> np.ndarray:
        rows = []
        for _ in range(n):
            X, y = blobs(100, self.rng)
            trained = train(self.weights, X, y, epochs=1, lr=0.1, batch=20, rng=self.rng)
            rows.append(flatten(trained, self.spec) - self.base)
        return np.stack(rows).astype(np.float32)

    def orthogonal_half(self, honest: int = 5, c: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Issue 20's orthogonal attack at half the round: ``honest`` honest rows, then as many copies of
        u = m (c g + sqrt(1 - c^2) h), g the unit reference, h the honest mean's opposite made orthogonal to
        it, m the honest median norm. The reference is the honest mean plus a third of its norm in a fixed
        orthogonal direction. Returns (the rows, float32; the reference, float32)."""
        rows = self.honest(honest)
        mean = rows.mean(axis=0).astype(np.float64)
        own = np.random.default_rng(3).standard_normal(mean.size)
        own -= (own @ mean) / (mean @ mean) * mean
        reference = mean + 0.33 * np.linalg.norm(mean) * own / np.linalg.norm(own)
        g = reference / np.linalg.norm(reference)
        h = -mean + float(mean @ g) * g
        h /= np.linalg.norm(h)
        m = float(np.median(np.linalg.norm(rows, axis=1)))
        u = m * (c * g + np.sqrt(1 - c**2) * h)
        X = np.vstack([rows, np.repeat(u[None, :], honest, axis=0)]).astype(np.float32)
        return X, reference.astype(np.float32)

    def inputs(
        self,
        deltas: np.ndarray,
        *,
        samples: list[int] | None = None,
        reputation: list[float] | None = None,
        extensions: int = 0,
        **params: Any,
    ) -> RoundInputs:
        n = deltas.shape[0]
        clients = tuple(
            ClientMeta(
                update_id=100 + i,
                participant_id=i + 1,
                address=f"0x{i + 1:040x}",
                num_samples=100 if samples is None else samples[i],
                submitted_at=OPENED + timedelta(minutes=10),
                reputation=50.0 if reputation is None else reputation[i],
            )
            for i in range(n)
        )
        return RoundInputs(
            round_id=7,
            params=RoundParams.from_snapshot(snapshot(**params)),
            opened_at=OPENED,
            deadline=DEADLINE,
            extensions=extensions,
            clients=clients,
            deltas=deltas,
            rejected=(),
            weights=self.weights,
            spec=self.spec,
            holdout=self.holdout,
        )
