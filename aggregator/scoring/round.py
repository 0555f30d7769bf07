"""One round's scores and Byzantine evidence, from the updates, the server's reference and its validation data.

The round computation calls :func:`score_round` once per close; it composes the pure pieces of
:mod:`aggregator.scoring.contribution`, :mod:`aggregator.scoring.scores` and :mod:`aggregator.scoring.reputation`:

- shares: each client's part of the aggregate (``coefficients`` from the strategy, aggregate = sum c_i x_i;
  a strategy without a linear decomposition is approximated by the plain mean of the clients it selected),
  known by c alone (:func:`share_coefficients`), never built as an (n, d) matrix;
- quality: the validation value of what the row adds, its novel part (:mod:`aggregator.scoring.novelty`;
  a row the strategy left out valued with the share it would have had), with an allowance of the round's
  typical standard error (:func:`aggregator.scoring.scores.novelty_quality`); the leave-one-out marginal
  of the whole share is still measured (``marginal``) and the row's effect in the round's context is the
  direction evidence's third test;
- honesty: cosine to the reference (allowing the round's honest scatter) and norm relative to the round's
  median;
- timeliness: inside the window or not;
- evidence: pointing away from the reference (an outlier of the round's cosines) AND harmful alone on the
  validation data AND harmful in the round's aggregate (when the caller gives the claims), or a norm of
  ``evidence_norm_ratio`` x the round's median or more, or a copy of the last public model change or of
  the server's reference update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.scoring.contribution import (
    LossOfDelta,
    batched_contributions,
    leave_one_out,
    mean_loss,
    solo_gains,
)
from aggregator.scoring.novelty import batched_novel_gains, nominal_coefficients, novel_gains
from aggregator.scoring.reputation import (
    PUBLIC_COPY_COSINE,
    ReputationConfig,
    direction_evidence,
    median_level,
    norm_evidence,
    public_copy_evidence,
)
from aggregator.scoring.responses import fits, response_measures
from aggregator.scoring.scores import (
    ScoringConfig,
    fitness_scores,
    novelty_quality,
    reference_honesty,
    window_timeliness,
)
from aggregator.strategies.base import InnerProducts
from aggregator.strategies.coordinatewise import median
from aggregator.strategies.fltrust import cosines_from, norms_and_cosines, row_norms
from fedledger.models import ValidationBatch

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
    # What the row adds beyond the aggregate's direction and the server's reference (quality's measure).
    novel_gain: np.ndarray | None = None
    # Its standard error over the validation examples used.
    novel_stderr: np.ndarray | None = None
    # Which of ``copied`` repeat the server's reference update (the rest repeat the last public change).
    copies_reference: np.ndarray | None = None
    # The validation examples the per-row measures used (marginal, solo, novel and context gains) of the
    # ``examples`` the loss was measured on: all of them, or a subsample when the round is above the score
    # budget (aggregator.scoring.budget); 0 and 0 when the loss is only a mean.
    examples: int = 0
    examples_used: int = 0
    # Which rows with direction evidence are also low outliers of the counted rows' median cosines to each
    # other (:func:`peer_outliers`); only their direction flags count toward slashing. None: every flag counts.
    peer_outlier: np.ndarray | None = None

    @property
    def slash_counted(self) -> np.ndarray:
        """The rows whose flag this round counts toward the slashing threshold: every flag but a direction
        flag alone on a row that is not a peer outlier."""
        unconfirmed = self.direction if self.peer_outlier is None else self.direction & ~self.peer_outlier
        counted: np.ndarray = self.evidence & ~(unconfirmed & ~self.boosted & ~self.copied)
        return counted


# How many robust spreads below the counted rows' median peer cosine a row must sit for its direction evidence
# to count toward slashing (:func:`peer_outliers`); the guarded rule's centre test uses 2.
PEER_OUTLIER_Z = 2.0


def peer_outliers(
    X: np.ndarray,
    norms: np.ndarray,
    rows: np.ndarray,
    counted: np.ndarray,
    z: float = PEER_OUTLIER_Z,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """Which of ``rows`` (a mask) have a median cosine to the other ``counted`` rows below the counted rows'
    median of that statistic less ``z`` robust spreads (:func:`median_level`). Only computed when some row
    is asked about, from ``gram`` (the rows' Gram matrix, e.g. the rule's inner products) or else one
    (n, n) Gram of float32 products.

    Why (issue 20, a binary task): direction evidence reads the server's reference, and an honest
    organization whose data disagree with the server's points away from it round after round: on IID binary
    data one was flagged seven times and slashed under ALIE, orthogonal, count poisoning and the collapse,
    while its cosines to the other updates were the crowd's (+0.10, -0.01). IPM, Min-Max and label flipping
    oppose the other organizations too. Screened (docs/benchmarks.md, "a task of one's own, a binary task,
    and a second candidate"): as a condition of the flag itself this let Fang and label flippers on synthetic
    Dirichlet(0.5) out of the evidence and cost 0.9 points more, so it only decides what counts toward
    slashing; the flag (no pay, the reputation falls) stays."""
    out = np.zeros(X.shape[0], dtype=bool)
    ask = np.asarray(rows, dtype=bool)
    members = np.asarray(counted, dtype=bool)
    if not ask.any() or int(members.sum()) < 3:
        return out
    if gram is None:
        gram = (X @ X.T).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = gram / np.outer(norms, norms)
    cos = np.nan_to_num(cos, nan=0.0, posinf=0.0, neginf=0.0)
    n = X.shape[0]
    peer = np.zeros(n)
    for i in range(n):
        others = members.copy()
        others[i] = False
        peer[i] = float(np.median(cos[i, others])) if others.any() else 0.0
    out[ask] = peer[ask] < median_level(peer[members], z)
    return out


def share_coefficients(n: int, coefficients: np.ndarray | None, selected: np.ndarray) -> np.ndarray:
    """c (float64, one per client) such that client i's part of the aggregate is c_i x_i: the strategy's
    coefficients, or 1 / |selected| for selected clients when it gives none (coordinate-wise rules). The
    shares themselves are never built: the contributions need only c and the rows."""
    if coefficients is None:
        c = np.zeros(n)
        chosen = np.asarray(selected, dtype=np.int64)
        if chosen.size:
            c[chosen] = 1.0 / chosen.size
        return c
    c = np.asarray(coefficients, dtype=np.float64)
    if c.shape != (n,) or not np.isfinite(c).all():
        raise InvalidParameter(f"coefficients must be {n} finite values, got shape {c.shape}")
    return c


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
    batch: ValidationBatch | None = None,
    claims: np.ndarray | None = None,
    sample: Callable[[int], np.ndarray | None] | None = None,
    products: InnerProducts | None = None,
    authored_change: np.ndarray | None = None,
    eligible: np.ndarray | None = None,
    reference_coefficient: float = 0.0,
) -> RoundScores:
    """Score every row of ``X`` (n, d) against the server's ``reference`` update.

    ``batch``: the validation data of a built-in model; then the contributions are measured in one pass
    over the updates (:func:`aggregator.scoring.contribution.batched_contributions`) instead of 2n + 1
    calls of ``loss_of``, equal up to float32 rounding.

    ``claims``: the rows' sample claims as the strategy weighed them (capped); a row the strategy left out
    (also one below ``min_reputation``: it is scored so that its reputation can climb back, not paid) is
    valued with the share those give it (:func:`aggregator.scoring.novelty.nominal_coefficients`). None:
    rows left out are worth 0.

    ``public_change``: the last accepted change of the global model (None before any); an update that is
    that change again (:func:`aggregator.scoring.reputation.public_copy_evidence`) is evidence, except for
    the rows ``authored_change`` marks (one per row; None: none): the change was their own update, kept
    alone (``RoundInputs.public_change_author``). A copy of the server's reference is evidence for every row.

    ``sample``: given the number of validation examples, the indices of those the per-row measures use
    (None: all; :mod:`aggregator.scoring.budget`). With a subsample the marginals, solo, novel and context
    gains and their standard errors are the subsample's (an unbiased estimate whose standard error grows
    as it shrinks), measured against the current model's loss on the same subsample; ``loss_before``
    stays the whole validation set's. A ``loss_of`` that gives only the mean loss is never subsampled.
    ``products``: the strategy's inner products over the rows of ``X`` and ``reference``
    (:class:`aggregator.strategies.base.InnerProducts`); used only with a subsample (they equal the
    scores' own passes up to float32 rounding).

    ``reference_coefficient``: the part of the aggregate that is the server's ``reference`` (the guarded
    rule's reference member, :attr:`aggregator.strategies.base.Aggregated.reference_coefficient`): nobody's
    share, it stays in every candidate that holds the aggregate (leave-one-out, novel and context gains),
    so each row is valued in the aggregate the close actually takes. Needs a reference.

    ``eligible``: the rows at or above ``min_reputation`` (one flag per row; None: all): only their cosines
    set the direction evidence's level (:func:`aggregator.scoring.reputation.direction_evidence`'s
    ``among``); every row is still scored and may still be flagged.

    ``loss_of(delta)`` is the validation loss of the current model plus ``delta`` (per example, or only its
    mean; see :data:`aggregator.scoring.contribution.LossOfDelta`). Without a reference
    (a server with no root data) the coordinate median of the updates stands in for it: honesty then
    measures agreement with the majority direction, which is weaker and documented as such.
    """
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    if batch is None:
        before = np.asarray(loss_of(np.zeros(d, dtype=np.float32)), dtype=np.float64)
    else:
        before = batch.losses(np.zeros_like(batch.base), np.zeros(batch.head_index.size))
    loss_before = mean_loss(before)
    if not (np.isfinite(loss_before) and loss_before > 0):
        raise InvalidParameter(
            f"the current model's validation loss must be finite and positive, got {loss_before}"
        )
    examples = int(before.size) if before.ndim == 1 else 0
    chosen = sample(examples) if sample is not None and examples > 0 else None
    ref = median(X) if reference is None else np.asarray(reference, dtype=np.float32)
    # Above the score budget, the rule's inner products over these rows and the reference (when it
    # computed them: the guarded default's one-pass Gram) stand in for the scores' own passes over the
    # updates: norms, cosines, the free-rider test against the reference and the novelty's Gram matrix.
    reuse = products if chosen is not None and reference is not None and products is not None else None
    if reuse is not None and reuse.sq.shape != (n,):
        raise InvalidParameter(f"the rule's inner products are of {reuse.sq.shape} rows, not {n}")
    if not float(np.abs(ref).max(initial=0.0)) > 0:
        # A zero reference points nowhere: no direction evidence this round, honesty from norms only.
        norms = row_norms(X)
        cosine = np.ones(n)
        ref_norm = float(np.median(norms)) or 1.0
        reuse = None
    elif reuse is not None:
        ref_norm = float(row_norms(ref[None, :])[0])
        norms, cosine, _ = cosines_from(X, reuse.sq, reuse.dots, ref_norm)
    else:
        # Norms and cosines from one pass over the updates (which also refuses a non-finite row).
        norms, cosine, _ = norms_and_cosines(X, ref)
        ref_norm = float(row_norms(ref[None, :])[0])
    c = share_coefficients(n, coefficients, selected)
    offset = None
    if reference_coefficient:
        if reference is None or not np.isfinite(reference_coefficient):
            raise InvalidParameter(
                "a reference coefficient needs the server's reference and a finite value, got "
                f"{reference_coefficient} with {'no' if reference is None else 'a'} reference"
            )
        offset = (np.float32(reference_coefficient) * ref).astype(np.float32, copy=False)
    k = np.zeros(n) if claims is None else nominal_coefficients(c, norms, claims, np.ones(n, dtype=bool))
    if chosen is None:
        loss_scale = loss_before
        marginal, stderr, solo, novel, novel_se, context = _row_measures(
            loss_of, batch, X, c, k, ref, loss_before, ref_norm, norms, offset
        )
    else:
        # Above the score budget: the per-row measures on the subsample, against the current model's loss
        # on the same examples.
        loss_scale = mean_loss(before[chosen])
        if batch is not None and fits(sub := batch.subset(chosen), X):
            gram = None if reuse is None else _with_reference(reuse, ref_norm)
            m = response_measures(
                sub, X, c, k, ref, loss_scale, ref_norm, norms, gram, float(reference_coefficient)
            )
            marginal, stderr, solo, novel, novel_se, context = (
                m.marginal,
                m.stderr,
                m.solo_gain,
                m.novel,
                m.novel_stderr,
                m.context,
            )
        else:
            marginal, stderr, solo, novel, novel_se, context = _row_measures(
                _subsampled(loss_of, chosen, examples),
                None if batch is None else batch.subset(chosen),
                X,
                c,
                k,
                ref,
                loss_scale,
                ref_norm,
                norms,
                offset,
            )
    quality = novelty_quality(
        novel, loss_scale, scoring.quality_share, scoring.quality_floor, novel_se, scoring.novelty_z
    )
    honesty = reference_honesty(
        cosine,
        norms,
        scoring.honesty_share,
        scoring.norm_tolerance,
        scoring.norm_cutoff,
        scoring.honesty_cosine_floor,
        scoring.honesty_z,
        scoring.honesty_full_cosine,
        ref_norm if reference is not None else 0.0,
    )
    timeliness = window_timeliness(submitted_at, deadline, scoring.timeliness_at_deadline)
    fitness = fitness_scores(quality, timeliness, honesty, scoring)
    boosted = norm_evidence(norms, reputation, ref_norm if reference is not None else 0.0)
    direction = direction_evidence(
        cosine, solo, reputation, loss_scale, context if claims is not None else None, eligible
    )
    # The server's own reference is public too (Kerckhoffs: the root data and the code are known): an update
    # that is it again is a free ride on the server's work. Honest local training measured at most 0.895 to
    # it (attack_eval, digits and synthetic, IID and Dirichlet(0.5), n = 10 and 30, 20 rounds; the issue-20
    # pay section of docs/benchmarks.md). Not the coordinate median that stands in without a reference.
    if reuse is not None:
        copies_reference = cosine >= PUBLIC_COPY_COSINE
    elif reference is not None:
        copies_reference = public_copy_evidence(X, reference, norms=norms)
    else:
        copies_reference = np.zeros(n, dtype=bool)
    copies_change = public_copy_evidence(X, public_change, norms=norms)
    if authored_change is not None:
        own = np.asarray(authored_change, dtype=bool)
        if own.shape != (n,):
            raise InvalidParameter(f"authored_change needs one flag per row ({n}), got shape {own.shape}")
        copies_change &= ~own
    copied = copies_change | copies_reference
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
        copies_reference=copies_reference,
        norms=norms,
        marginal=marginal,
        marginal_stderr=stderr,
        solo_gain=solo,
        loss_before=loss_before,
        novel_gain=novel,
        novel_stderr=novel_se,
        examples=examples,
        examples_used=examples if chosen is None else int(chosen.size),
        peer_outlier=peer_outliers(
            X,
            norms,
            direction,
            eligible if eligible is not None and eligible.any() else np.ones(n, dtype=bool),
            # The rule's Gram over these rows when it computed one: no second pass over the updates.
            gram=products.gram if products is not None and products.gram.shape == (n, n) else None,
        ),
    )


def _with_reference(products: InnerProducts, ref_norm: float) -> np.ndarray:
    """The (n + 1)-square Gram matrix of the rows and the reference (last) from the rule's inner products."""
    n = products.sq.size
    G = np.empty((n + 1, n + 1))
    G[:n, :n] = products.gram
    G[:n, n] = G[n, :n] = products.dots
    G[n, n] = ref_norm * ref_norm
    return G


def _row_measures(
    loss_of: LossOfDelta,
    batch: ValidationBatch | None,
    X: np.ndarray,
    c: np.ndarray,
    k: np.ndarray,
    ref: np.ndarray,
    loss_before: float,
    ref_norm: float,
    norms: np.ndarray,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(marginal, its standard error, solo gain, novel gain, its standard error, context gain) of every row:
    one candidate at a time through ``loss_of``, or batched on ``batch``; ``offset`` is the aggregate's part
    that is nobody's share."""
    if batch is None:
        _, marginal, stderr = leave_one_out(loss_of, X, c, offset)
        solo = solo_gains(loss_of, loss_before, X, ref_norm, norms)
        novel, novel_se = novel_gains(loss_of, X, c, k, ref, offset=offset)
        context, _ = novel_gains(loss_of, X, c, k, ref, residual=False, offset=offset)
    else:
        measured = batched_contributions(batch, X, c, loss_before, ref_norm, norms, offset)
        marginal, stderr, solo = measured.marginal, measured.stderr, measured.solo_gain
        novel, novel_se = batched_novel_gains(batch, X, c, k, ref, offset=offset)
        context, _ = batched_novel_gains(batch, X, c, k, ref, residual=False, offset=offset)
    return marginal, stderr, solo, novel, novel_se, context


def _subsampled(loss_of: LossOfDelta, chosen: np.ndarray, examples: int) -> LossOfDelta:
    """``loss_of`` on the examples ``chosen`` only (its per-example losses, indexed)."""

    def loss(delta: np.ndarray) -> float | np.ndarray:
        value = np.asarray(loss_of(delta), dtype=np.float64)
        if value.shape != (examples,):
            raise InvalidParameter(
                f"the loss of a candidate must have one value per validation example ({examples}), "
                f"got shape {value.shape}"
            )
        out: np.ndarray = value[chosen]
        return out

    return loss
