"""One round's scores and Byzantine evidence, from the updates, the server's reference and its validation data.

The round computation calls :func:`score_round` once per close; it composes the pure pieces of
:mod:`aggregator.scoring.contribution`, :mod:`aggregator.scoring.scores` and :mod:`aggregator.scoring.reputation`:

- shares: each client's part of the aggregate (``coefficients`` from the strategy, aggregate = sum c_i x_i;
  a strategy without a linear decomposition is approximated by the plain mean of the clients it selected);
- quality: leave-one-out marginal contribution of the share on the validation loss, with its standard error
  over the validation examples (differences the validation set cannot resolve are not ranked);
- honesty: cosine to the reference (allowing the round's honest scatter) and norm relative to the round's
  median;
- timeliness: inside the window or not;
- evidence: pointing away from the reference (an outlier of the round's cosines) AND harmful alone on the
  validation data, or a norm of
  ``evidence_norm_ratio`` x the round's median or more, or a copy of the last public model change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.scoring.contribution import LossOfDelta, leave_one_out, mean_loss, solo_gains
from aggregator.scoring.reputation import (
    ReputationConfig,
    direction_evidence,
    norm_evidence,
    public_copy_evidence,
)
from aggregator.scoring.scores import (
    ScoringConfig,
    contribution_quality,
    fitness_scores,
    reference_honesty,
    significance_z,
    window_timeliness,
)
from aggregator.strategies.coordinatewise import median
from aggregator.strategies.fltrust import cosine_to_reference, row_norms

DEFAULT_SCORING = ScoringConfig()
DEFAULT_REPUTATION = ReputationConfig()


@dataclass(frozen=True)
class RoundScores:
    """Per-client scores (0..100), the raw signals they come from, and this round's evidence mask."""

    quality: np.ndarray
    timeliness: np.ndarray
    honesty: np.ndarray
    fitness: np.ndarray
    evidence: np.ndarray
    cosine: np.ndarray
    direction: np.ndarray
    boosted: np.ndarray
    copied: np.ndarray
    norms: np.ndarray
    marginal: np.ndarray
    marginal_stderr: np.ndarray
    solo_gain: np.ndarray
    loss_before: float


def shares_of(X: np.ndarray, coefficients: np.ndarray | None, selected: np.ndarray) -> np.ndarray:
    """Row i = client i's part of the aggregate: c_i x_i, or x_i / |selected| for selected clients when the
    strategy gives no coefficients (coordinate-wise rules)."""
    n = X.shape[0]
    if coefficients is None:
        c = np.zeros(n)
        chosen = np.asarray(selected, dtype=np.int64)
        if chosen.size:
            c[chosen] = 1.0 / chosen.size
    else:
        c = np.asarray(coefficients, dtype=np.float64)
        if c.shape != (n,) or not np.isfinite(c).all():
            raise InvalidParameter(f"coefficients must be {n} finite values, got shape {c.shape}")
    shares: np.ndarray = (c[:, None] * X).astype(np.float32)
    return shares


def score_round(
    loss_of: LossOfDelta,
    X: np.ndarray,
    reference: np.ndarray | None,
    coefficients: np.ndarray | None,
    selected: np.ndarray,
    submitted_at: np.ndarray,
    deadline: float,
    scoring: ScoringConfig = DEFAULT_SCORING,
    reputation: ReputationConfig = DEFAULT_REPUTATION,
    public_change: np.ndarray | None = None,
) -> RoundScores:
    """Score every row of ``X`` (n, d) against the server's ``reference`` update.

    ``public_change``: the last accepted change of the global model (None before any); an update that is
    that change again (:func:`aggregator.scoring.reputation.public_copy_evidence`) is evidence.

    ``loss_of(delta)`` is the validation loss of the current model plus ``delta`` (per example, or only its
    mean; see :data:`aggregator.scoring.contribution.LossOfDelta`). Without a reference
    (a server with no root data) the coordinate median of the updates stands in for it: honesty then
    measures agreement with the majority direction, which is weaker and documented as such.
    """
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    loss_before = mean_loss(loss_of(np.zeros(d, dtype=np.float32)))
    if not (np.isfinite(loss_before) and loss_before > 0):
        raise InvalidParameter(
            f"the current model's validation loss must be finite and positive, got {loss_before}"
        )
    ref = median(X) if reference is None else np.asarray(reference, dtype=np.float32)
    if not float(np.abs(ref).max(initial=0.0)) > 0:
        # A zero reference points nowhere: no direction evidence this round, honesty from norms only.
        cosine = np.ones(n)
        ref_norm = float(np.median(row_norms(X))) or 1.0
    else:
        cosine = cosine_to_reference(X, ref)
        ref_norm = float(row_norms(ref[None, :])[0])
    _, marginal, stderr = leave_one_out(loss_of, shares_of(X, coefficients, selected))
    solo = solo_gains(loss_of, loss_before, X, ref_norm)
    quality = contribution_quality(
        marginal,
        loss_before,
        scoring.quality_share,
        scoring.quality_floor,
        stderr,
        significance_z(scoring.quality_alpha, n),
    )
    norms = row_norms(X)
    honesty = reference_honesty(
        cosine,
        norms,
        scoring.honesty_share,
        scoring.norm_tolerance,
        scoring.norm_cutoff,
        scoring.honesty_cosine_floor,
        scoring.honesty_z,
    )
    timeliness = window_timeliness(submitted_at, deadline, scoring.timeliness_at_deadline)
    fitness = fitness_scores(quality, timeliness, honesty, scoring)
    boosted = norm_evidence(norms, reputation, ref_norm if reference is not None else 0.0)
    direction = direction_evidence(cosine, solo, reputation, loss_before)
    copied = public_copy_evidence(X, public_change)
    evidence = direction | boosted | copied
    return RoundScores(
        quality=quality,
        timeliness=timeliness,
        honesty=honesty,
        fitness=fitness,
        evidence=evidence,
        cosine=cosine,
        direction=direction,
        boosted=boosted,
        copied=copied,
        norms=norms,
        marginal=marginal,
        marginal_stderr=stderr,
        solo_gain=solo,
        loss_before=loss_before,
    )
