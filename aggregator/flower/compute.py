"""One round of fedledger's robust aggregation, scores and reputation on plain arrays (no database, no chain).

This is what :class:`~aggregator.flower.strategy.FedLedgerStrategy` runs when it is not pointed at a
fedledger deployment. It composes the same pure functions the worker's round close uses
(``aggregator.robust``, ``aggregator.scoring``, ``aggregator.reputation``), so a Flower federation gets the
same rules, the same parameters and the same typed refusals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aggregator import robust
from aggregator.errors import InvalidParameter, TooFewClients, UnknownStrategy
from aggregator.reputation import ReputationConfig, detect_byzantine, update_reputation
from aggregator.scoring import (
    ScoringConfig,
    consensus_distances,
    fitness_scores,
    honesty_scores,
    quality_scores,
    timeliness_scores,
)

# Loss of the model ``global + delta`` (flattened float32 vector) on whatever holdout the caller has.
LossFn = Callable[[np.ndarray], float]

# Parameters a caller may set, by strategy (the names of ``aggregator.robust.aggregate``). Per-client
# vectors (weights, reputation) are not settable: the round derives them from sample counts and reputation.
SETTABLE: dict[str, frozenset[str]] = {
    "fedavg": frozenset(),
    "trimmed_mean": frozenset({"beta"}),
    "median": frozenset(),
    "krum": frozenset({"f"}),
    "multi_krum": frozenset({"f", "m"}),
    "bulyan": frozenset({"f"}),
    "reputation": frozenset({"cap"}),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "trimmed_mean": {"beta": 0.2},
    "krum": {"f": 1},
    "multi_krum": {"f": 1, "m": None},
    "bulyan": {"f": 1},
    "reputation": {"cap": 0.8},
}


def required_clients(strategy: str, params: Mapping[str, Any]) -> int:
    """Updates the rule needs: Krum family n >= 2f + 3, Bulyan n >= 4f + 3, otherwise 1."""
    f = int(params.get("f", 0))
    return {"krum": 2 * f + 3, "multi_krum": 2 * f + 3, "bulyan": 4 * f + 3}.get(strategy, 1)


def check_strategy(strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's full parameters (defaults filled in), or the same typed error ``aggregate`` raises.

    Ranges are checked by running the rule itself once on a zero matrix of the size it needs, so the
    refusals (``InvalidParameter``, ``TooFewClients``) are exactly the aggregator's, never a copy of them.
    """
    if strategy not in SETTABLE:
        raise UnknownStrategy(f"unknown strategy {strategy!r}; valid: {', '.join(SETTABLE)}")
    unknown = sorted(set(params) - SETTABLE[strategy])
    if unknown:
        allowed = ", ".join(sorted(SETTABLE[strategy])) or "none"
        raise InvalidParameter(f"{strategy}: unknown parameter(s) {unknown}; settable: {allowed}")
    full = {**DEFAULTS.get(strategy, {}), **params}
    n = required_clients(strategy, full)
    m, f = full.get("m"), full.get("f")
    if isinstance(m, int) and isinstance(f, int) and m > 0 and f >= 0:
        n = max(n, m + f)  # m <= n - f is a condition on the round's size, checked when it runs
    X = np.zeros((n, 1), dtype=np.float32)
    robust.aggregate(strategy, X, **rule_kwargs(strategy, full, np.ones(n), np.full(n, 50.0)))
    return full


def rule_kwargs(
    strategy: str, params: Mapping[str, Any], samples: np.ndarray, reputation: np.ndarray
) -> dict[str, Any]:
    """Keyword arguments of ``robust.aggregate`` for this round (sample-weighted where the rule weights)."""
    if strategy == "fedavg":
        return {"weights": samples}
    if strategy == "trimmed_mean":
        return {"beta": float(params["beta"])}
    if strategy in ("krum", "bulyan"):
        return {"f": params["f"]}
    if strategy == "multi_krum":
        return {"f": params["f"], "m": params["m"], "weights": samples}
    if strategy == "reputation":
        return {"reputation": reputation, "cap": float(params["cap"])}
    return {}


def selected(strategy: str, X: np.ndarray, kwargs: Mapping[str, Any]) -> np.ndarray:
    """Indices of the clients the rule let into the aggregate (all of them for coordinate-wise rules)."""
    n = X.shape[0]
    if strategy == "krum":
        return np.array([robust.select_krum(robust.pairwise_sq_distances(X), kwargs["f"])])
    if strategy == "multi_krum":
        m = kwargs["m"] or n - kwargs["f"]
        return np.asarray(robust.select_multikrum(robust.pairwise_sq_distances(X), kwargs["f"], m))
    if strategy == "bulyan":
        return np.asarray(robust.select_bulyan(robust.pairwise_sq_distances(X), kwargs["f"]))
    return np.arange(n)


@dataclass(frozen=True)
class RoundResult:
    """Per-client arrays are in the order of the rows of ``X``."""

    aggregate: np.ndarray  # the robust aggregate of the deltas (float32, n_params)
    kept: np.ndarray  # bool: in the aggregate and not flagged Byzantine
    quality: np.ndarray
    timeliness: np.ndarray
    honesty: np.ndarray
    fitness: np.ndarray
    byzantine: np.ndarray  # bool
    reputation: np.ndarray  # after the round
    loss_before: float | None
    loss_after: float | None


def compute_round(
    X: np.ndarray,
    *,
    strategy: str,
    params: Mapping[str, Any],
    samples: np.ndarray,
    reputation: np.ndarray,
    loss_fn: LossFn | None = None,
    submitted_at: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    scoring: ScoringConfig | None = None,
    reputation_config: ReputationConfig | None = None,
) -> RoundResult:
    """Aggregate the deltas ``X`` (n_clients, n_params), score every client and move its reputation.

    Quality needs ``loss_fn`` (the loss of ``global + delta``); without one every client's quality is the
    neutral 50. Timeliness needs ``submitted_at`` and the round ``window`` (opened, deadline); without them
    it is 100 for everyone. Honesty is the scale-aware distance to the robust aggregate, as on the platform.
    """
    scoring = scoring or ScoringConfig()
    reputation_config = reputation_config or ReputationConfig()
    n = X.shape[0]
    needed = required_clients(strategy, params)
    if n < needed:
        raise TooFewClients(
            f"{strategy} with f={params.get('f')} needs at least {needed} valid updates, got {n}"
        )
    kwargs = rule_kwargs(strategy, params, samples, reputation)
    aggregate = robust.aggregate(strategy, X, **kwargs)
    chosen = np.zeros(n, dtype=bool)
    chosen[selected(strategy, X, kwargs)] = True

    loss_before = loss_after = None
    if loss_fn is not None:
        loss_before = float(loss_fn(np.zeros(X.shape[1], dtype=np.float32)))
        quality = quality_scores(loss_before, [loss_fn(row) for row in X])
        loss_after = float(loss_fn(aggregate))
    else:
        quality = np.full(n, 50.0)
    if submitted_at is not None and window is not None:
        timeliness = timeliness_scores(submitted_at, window[0], window[1], scoring.timeliness_at_deadline)
    else:
        timeliness = np.full(n, 100.0)
    honesty = honesty_scores(
        consensus_distances(X, aggregate), tolerance=scoring.honesty_tolerance, cutoff=scoring.honesty_cutoff
    )
    fitness = fitness_scores(quality, timeliness, honesty, scoring)
    byzantine = detect_byzantine(honesty, reputation_config)
    rep_after = update_reputation(reputation, fitness, byzantine, reputation_config)
    return RoundResult(
        aggregate=aggregate,
        kept=chosen & ~byzantine,
        quality=quality,
        timeliness=timeliness,
        honesty=honesty,
        fitness=fitness,
        byzantine=byzantine,
        reputation=rep_after,
        loss_before=loss_before,
        loss_after=loss_after,
    )
