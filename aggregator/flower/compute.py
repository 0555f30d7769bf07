"""A round for a model the platform's holdout evaluation does not know (any Flower model with ``loss_fn``).

:func:`aggregator.round.compute.compute_round` scores with fedledger's built-in forward pass on a holdout;
a Flower federation training its own model gives a loss function instead. This runs the same strategy
object (same rule, same parameters, same refusals) and, with ``loss_fn``, the platform's own scores
(:func:`aggregator.scoring.round.score_round`: leave-one-out quality with standard errors when ``loss_fn``
returns per-example losses, honesty and Byzantine evidence against a reference direction) and reputation
rule. There is no server root data here, so the coordinate-wise median of the updates stands in for the
reference: honesty then measures agreement with the majority direction, which is weaker than FLTrust's
trusted reference and documented as such. Without ``loss_fn`` nothing can measure useful work: quality is
a neutral 50 and honesty the distance to the coordinate-wise median. Timeliness is 100 (Flower delivers
replies together; a reply's own timestamp is the client's claim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aggregator.round.params import RoundParams
from aggregator.scoring.contribution import mean_loss
from aggregator.scoring.reputation import detect_byzantine, update_reputation
from aggregator.scoring.round import score_round as platform_scores
from aggregator.scoring.scores import consensus_distances, fitness_scores, honesty_scores
from aggregator.strategies import Strategy, StrategyInputs
from aggregator.strategies.coordinatewise import median

# Loss of the model ``global + delta`` (flattened float32 vector): per example (1-D) or only the mean.
DeltaLoss = Callable[[np.ndarray], "float | np.ndarray"]


@dataclass(frozen=True)
class ScoredRound:
    """Per-client arrays in the order of the rows of ``X``."""

    aggregate: np.ndarray
    kept: np.ndarray
    quality: np.ndarray
    timeliness: np.ndarray
    honesty: np.ndarray
    fitness: np.ndarray
    byzantine: np.ndarray
    reputation: np.ndarray
    loss_before: float | None
    loss_after: float | None


def score_round(
    X: np.ndarray,
    strategy: Strategy,
    params: RoundParams,
    samples: np.ndarray,
    reputation: np.ndarray,
    loss_fn: DeltaLoss | None,
) -> ScoredRound:
    """Aggregate the deltas ``X`` with ``strategy``, score every client and move its reputation."""
    n = X.shape[0]
    strategy.check_clients(n)
    result = strategy.aggregate(
        X, StrategyInputs.of(n, np.minimum(samples, _cap(samples, params)), reputation)
    )
    chosen = np.zeros(n, dtype=bool)
    chosen[result.selected] = True
    config = params.scoring
    loss_before = loss_after = None
    if loss_fn is not None:
        scores = platform_scores(
            loss_fn,
            X,
            None,
            result.coefficients,
            np.asarray(result.selected),
            np.zeros(n),
            0.0,
            config,
            params.reputation,
        )
        quality, timeliness, honesty = scores.quality, scores.timeliness, scores.honesty
        fitness, byzantine = scores.fitness, scores.evidence
        loss_before = scores.loss_before
        loss_after = mean_loss(loss_fn(result.vector))
    else:
        quality = np.full(n, 50.0)
        timeliness = np.full(n, 100.0)
        # As the platform's close without a reference: distance to the coordinate-wise median, which an
        # attacker cannot pull alone.
        honesty = honesty_scores(
            consensus_distances(X, median(X)),
            tolerance=config.honesty_tolerance,
            cutoff=config.honesty_cutoff,
        )
        fitness = fitness_scores(quality, timeliness, honesty, config)
        byzantine = detect_byzantine(honesty, params.reputation)
    return ScoredRound(
        aggregate=result.vector,
        kept=chosen & ~byzantine,
        quality=quality,
        timeliness=timeliness,
        honesty=honesty,
        fitness=fitness,
        byzantine=byzantine,
        reputation=update_reputation(reputation, fitness, byzantine, params.reputation),
        loss_before=loss_before,
        loss_after=loss_after,
    )


def _cap(samples: np.ndarray, params: RoundParams) -> float:
    """The round's bound on a claimed sample count (``sample_weight_cap`` x the median claim)."""
    return params.sample_weight_cap * max(float(np.median(samples)), 1.0)
