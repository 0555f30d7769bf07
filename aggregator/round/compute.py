"""A round's computation, pure: decrypted updates and their metadata in, every decision of the close out.

No database, no chain, no blob store, no decryption: :mod:`aggregator.worker.close` loads and decrypts
(each envelope once), calls :func:`compute_round`, and writes the :class:`RoundResult` in one transaction.

Steps: eligibility (``min_reputation``) -> sample-weight cap -> client count check -> DP clipping -> the
strategy (aggregate + selected clients) -> DP noise -> scores on the holdout -> Byzantine detection ->
reputations -> rewards and their Merkle tree -> the new model and the rollback decision.

Decisions documented here:

- A client below the governed ``min_reputation`` is left out of the aggregate and paid nothing, but it is
  still scored and its reputation still moves toward its fitness: otherwise a client that once fell below
  the minimum could never climb back, and a Byzantine one would stop being detected.
- Scores and Byzantine evidence are measured against what the server trusts, never against the strategy's
  aggregate (which a non-robust strategy lets an attacker pull toward itself): the server's reference
  update (``reference``, trained on its root data) and its validation data (``holdout``); see
  :mod:`aggregator.scoring.round`. Without a reference the coordinate median of the updates stands in.
- A claimed sample count above ``sample_weight_cap`` x the round's lower median claim counts only up to
  that bound in every weighting (FedAvg samples/hybrid, Multi-Krum), and that is all: it is not evidence.
  The median is a statistic of the round that the other wallets move (six wallets claiming 1 sample made
  every honest count "over the cap"), so it may limit a weight but never turn a claim into a flag, an
  unpaid round or a slash. The lower median (the smaller middle claim) keeps the bound at an honest claim
  with up to half the wallets claiming more.
- A flagged update, or one below ``min_reputation``, is not paid. Every other update is paid by its fitness
  if it adds something (quality > 0, or kept with a share not significantly harmful: its leave-one-out
  gain plus two capped standard errors positive; :func:`aggregator.scoring.scores.payable`), whose
  quality is the validation value of what the update adds beyond the aggregate's direction and the
  server's reference (:mod:`aggregator.scoring.novelty`): a copy of the mean adds nothing (the line search scales the
  aggregate anyway), a 1-sample claim's share is tiny. An update the strategy leaves out is valued with
  the share it would have had: issue 20, the guarded gate leaves out 0-6 of 7 honest non-IID rows a round
  and never a copy of the mean, and paying only the rows it keeps paid conformity, up to 2.03x the median
  honest organization; a row that adds nothing (or harm) is paid nothing, kept or left out (issue 22.2;
  kept rows too since issue 20's 50 % measurement: five identical attacker rows of ten, harmful shares,
  were kept and paid the lowest tier on timeliness and honesty alone, 1.14x the median honest
  organization). Why a row was left out is on its outcome (``excluded_reason``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np

from aggregator import strategies
from aggregator.errors import AggregationError, InvalidParameter, PrivacyBudgetExceeded, TooFewClients
from aggregator.round import rollback
from aggregator.round.dp import PrivacyAccountant, clip_rows_in_place, gaussian_noise_std
from aggregator.round.params import DpParams, RoundParams
from aggregator.round.rollback import FLOOR_STANDARD_ERRORS, StepDecision, line_search_decision
from aggregator.scoring.budget import ScoreBudget, default_budget, round_seed, score_sample
from aggregator.scoring.contribution import mean_loss
from aggregator.scoring.reputation import update_reputation
from aggregator.scoring.round import RoundScores, score_round
from aggregator.scoring.scores import payable, resolved_gains, reward_amounts
from aggregator.strategies import Aggregated, Strategy, StrategyInputs
from aggregator.strategies.kernels import row_norms
from fedledger.chain.merkle import RewardTree
from fedledger.evidence import Evidence, Finding
from fedledger.models import UnknownModelFamily, ValidationBatch, evaluate, example_losses
from fedledger.payload import flatten, unflatten

Spec = Mapping[str, list[int] | tuple[int, ...]]
Weights = dict[str, np.ndarray]
Detail = strategies.base.Detail
# A caller's measure of a model on the server's data (RoundInputs.evaluate): (loss, accuracy).
Evaluation = Callable[[Weights], tuple[float | np.ndarray, float | None]]


class CloseStatus(StrEnum):
    """What the close decided for the round."""

    aggregated = "aggregated"
    extended = "extended"
    failed = "failed"


@dataclass(frozen=True)
class ClientMeta:
    """One submitted update's metadata (no ORM row): who, when, how many samples claimed, standing."""

    update_id: int
    participant_id: int
    address: str
    num_samples: int
    submitted_at: datetime
    reputation: float


@dataclass(frozen=True)
class RoundInputs:
    """Everything the computation reads. ``deltas`` row i is ``clients[i]``'s decrypted update, flattened
    in ``spec`` order; ``rejected`` are updates that failed decryption or validation, with the reason.
    ``reference``: the server's own update on its root data (FLTrust), flattened like the deltas.
    Under differential privacy :func:`compute_round` clips ``deltas``' rows in place (no copy of the
    updates): a float32 ``deltas`` holds the clipped updates afterwards.
    ``evaluate``: (loss, accuracy) of a model on the server's data, for models the built-in forward pass
    does not know (e.g. a Flower federation's): the loss per example (the quality scores then get standard
    errors) or only its mean, the accuracy None when the model has none; None = the built-in forward pass
    (:func:`fedledger.models.evaluate`) on ``holdout``."""

    round_id: int
    params: RoundParams
    opened_at: datetime
    deadline: datetime
    extensions: int
    clients: tuple[ClientMeta, ...]
    deltas: np.ndarray
    rejected: tuple[tuple[ClientMeta, str], ...]
    weights: Weights
    spec: Spec
    holdout: tuple[np.ndarray, np.ndarray] | None
    dp_rounds_spent: int = 0
    reference: np.ndarray | None = None
    evaluate: Evaluation | None = None
    # The last accepted change of the global model (active model minus its parent), flattened like the
    # deltas; None before the first. An update that is it again is evidence (free riders resend it).
    public_change: np.ndarray | None = None
    # The participant whose update was the only one kept in the round that made ``public_change`` (None:
    # several, none, or no change). Its next update is exempt from the public-copy evidence: an organization
    # whose data pull one way sends that direction again every round (issue 20: at 50 % ALIE on digits
    # Dirichlet(0.5) the rule kept one honest row alone for rounds, its next update had cosine 0.9975 to
    # the change its own update had made, and four such flags slashed it). Resending the change is free
    # riding on others' work; resending one's own is not, and only per-organization history tells them apart.
    public_change_author: int | None = None
    # The rule to run instead of the one ``params.strategy`` names: a sharded close passes the round's own
    # rule wrapped so that it returns what its shards computed over the real coordinates
    # (aggregator.round.sharding.ShardedRule); None for every other close.
    strategy: Strategy | None = None
    # A caller's batched evaluator, used wherever the close scores many candidates (the sharded close's,
    # over E's coordinates: aggregator.round.sharding.EmbeddedBatch); None: from ``holdout``.
    validation: ValidationBatch | None = None
    # The parameter count of the model the deltas stand for, when they are not its coordinates (a sharded
    # close runs on an embedding of k <= n + 2 coordinates); None: the deltas' own length. The score budget
    # is judged on it, so both closes of a round score on the same examples.
    model_size: int | None = None
    # The per-row scores' budget (aggregator.scoring.budget): above it they use a seeded subsample of the
    # validation examples; the decision (line search, rollback) always uses all of them. None: the
    # module's defaults (aggregator.scoring.budget.default_budget).
    score_budget: ScoreBudget | None = None
    # Rounds in a row, up to this one, whose close kept neither the rule's aggregate nor the server's step
    # (refused, or kept the second candidate): after rollback.FALLBACK_AFTER_STALLED of them a refused
    # aggregate gives way to the second candidate (:func:`_decide`). The worker counts them from the
    # aggregation records (aggregator.worker.close.stalled_rounds).
    stalled_rounds: int = 0

    def score_sample(self, examples: int) -> np.ndarray | None:
        """The validation examples the per-row scores use, of ``examples`` (None: all of them)."""
        n = len(self.clients)
        size = self.model_size if self.model_size is not None else int(np.size(self.deltas)) // max(n, 1)
        budget = self.score_budget if self.score_budget is not None else default_budget()
        used = budget.size(n, size, examples)
        seed = round_seed(self.round_id, [(c.update_id, c.submitted_at) for c in self.clients])
        return score_sample(seed, examples, used)

    def metrics(self, weights: Weights) -> tuple[float, float | None]:
        """(mean loss, accuracy) of ``weights`` on the server's data."""
        if self.evaluate is not None:
            loss, accuracy = self.evaluate(weights)
            return (float(loss) if np.ndim(loss) == 0 else mean_loss(loss)), accuracy
        return evaluate(weights, *self._holdout())

    def losses(self, weights: Weights) -> float | np.ndarray:
        """The loss of every validation example, or only the mean loss (an ``evaluate`` that gives only it)."""
        if self.evaluate is not None:
            return self.evaluate(weights)[0]
        return example_losses(weights, *self._holdout())

    def batch(self) -> ValidationBatch | None:
        """The holdout as a batched evaluator of the built-in model (:class:`ValidationBatch`: many
        candidate models per pass over the updates), or None for a caller's ``evaluate`` or another model;
        ``validation`` when the caller gives one."""
        if self.validation is not None:
            return self.validation
        if self.evaluate is not None or self.holdout is None:
            return None
        try:
            return ValidationBatch(self.weights, *self.holdout, self.spec)
        except UnknownModelFamily:
            return None

    def _holdout(self) -> tuple[np.ndarray, np.ndarray]:
        if self.holdout is None:
            raise InvalidParameter(
                "a round needs the server's validation data (holdout) or an evaluate function"
            )
        return self.holdout


@dataclass(frozen=True)
class ClientOutcome:
    """One client's scores and decisions (becomes its contribution record). ``selected``: the strategy let
    its update into the aggregate; ``kept``: selected and not flagged Byzantine."""

    update_id: int
    participant_id: int
    address: str
    quality: float
    timeliness: float
    honesty: float
    fitness: float
    selected: bool
    kept: bool
    byzantine: bool
    reward_wei: int
    merkle_proof: tuple[str, ...]
    reputation_after: float
    evidence: tuple[Finding, ...] = ()
    # The reputation the close read (its eligibility and the guarded rule's standing weights use it): with
    # the round's rows and blobs, what an audit needs to compute the same round again.
    reputation_before: float | None = None
    # Whether this round's flag (``byzantine``) counts toward the slashing threshold: not when its only
    # evidence is direction evidence on a row that agrees with the other updates (RoundScores.slash_counted).
    slash_counted: bool = True
    # Why the update is not in the aggregate (None when kept): shown to its organization.
    excluded_reason: str | None = None


@dataclass(frozen=True)
class AggregationRecord:
    """What an aggregated round did (becomes its aggregation row): the strategy and the parameter values
    it used, the holdout before and after, the rollback decision, DP, the rewards root and timings."""

    strategy: str
    params: dict[str, Detail]
    holdout_loss_before: float
    holdout_loss_after: float
    holdout_accuracy: float | None
    rolled_back: bool
    decision: str
    dp_noise_std: float | None
    epsilon_spent: float | None
    rewards_root: str
    total_reward_wei: int
    durations_ms: dict[str, float]


@dataclass(frozen=True)
class RoundResult:
    """The close's decisions. ``status`` aggregated: ``new_weights`` and ``record`` are set; extended:
    ``extend_to``; failed: ``reason``. ``rejected`` is (update id, reason) in every case."""

    status: CloseStatus
    reason: str | None = None
    extend_to: datetime | None = None
    rejected: tuple[tuple[int, str], ...] = ()
    clients: tuple[ClientOutcome, ...] = ()
    new_weights: Weights | None = None
    activate: bool = False
    # The strategy's aggregate (with DP noise when on); the kept model is the base + ``step`` x it, or, when
    # the close kept the server's own step (the record's decision says so), the base + the reference.
    aggregate: np.ndarray | None = None
    step: float = 0.0
    record: AggregationRecord | None = None

    @property
    def kept(self) -> tuple[ClientOutcome, ...]:
        """Clients whose update the new model keeps."""
        return tuple(c for c in self.clients if c.kept)


@dataclass(frozen=True)
class SampleWeights:
    """Claimed sample counts bounded by ``cap`` x the round's lower median claim, and who claimed above it
    (a weight limit only: see the module docstring)."""

    capped: np.ndarray
    bound: float
    above: np.ndarray

    @classmethod
    def of(cls, claims: np.ndarray, cap: float) -> SampleWeights:
        """Bound the claims; an empty round has no bound."""
        if claims.size == 0:
            return cls(claims, 0.0, np.zeros(0, dtype=bool))
        # The lower median: with half the claims inflated, the middle pair's mean would be half the largest.
        lower_median = float(np.partition(claims, (claims.size - 1) // 2)[(claims.size - 1) // 2])
        # At least one sample: a round of zero claims still has a positive bound.
        bound = cap * max(lower_median, 1.0)
        return cls(np.minimum(claims, bound), bound, claims > bound)


def compute_round(inputs: RoundInputs, rng: np.random.Generator, now: datetime) -> RoundResult:
    """Run the round's computation; see the module docstring for the steps and decisions."""
    params = inputs.params
    rejected = tuple((c.update_id, reason) for c, reason in inputs.rejected)
    try:
        strategy = inputs.strategy if inputs.strategy is not None else strategies.build(params)
    except AggregationError as exc:
        return RoundResult(CloseStatus.failed, f"{params.strategy}: {exc}", rejected=rejected)

    n = len(inputs.clients)
    reputation = np.array([c.reputation for c in inputs.clients], dtype=np.float64)
    eligible = reputation >= params.min_reputation
    needed = max(params.min_participants, strategy.required_clients())
    if int(eligible.sum()) < needed:
        return _too_few(inputs, int(eligible.sum()), needed, n - int(eligible.sum()), rejected, now)

    X = np.asarray(inputs.deltas, dtype=np.float32).reshape(n, -1)
    samples = SampleWeights.of(
        np.array([c.num_samples for c in inputs.clients], dtype=np.float64), params.sample_weight_cap
    )
    timings: dict[str, float] = {}
    accountant = None
    if params.dp is not None:
        try:
            accountant = _charge_privacy(params.dp, inputs.dp_rounds_spent)
        except PrivacyBudgetExceeded as exc:
            return RoundResult(CloseStatus.failed, str(exc), rejected=rejected)
        # In place: no clipped copy of the updates (the caller's float32 deltas hold the clipped rows).
        clip_rows_in_place(X, params.dp.clip_norm)

    members = np.flatnonzero(eligible)
    start = time.perf_counter()
    try:
        result = strategy.aggregate(
            # Every client eligible (the usual round): the matrix itself, not an (n, d) copy of it.
            X if members.size == n else X[members],
            StrategyInputs(
                samples.capped[members], reputation[members], reference=inputs.reference, rng=rng.spawn(1)[0]
            ),
        )
    except TooFewClients as exc:
        return _too_few(inputs, members.size, needed, n - members.size, rejected, now, str(exc))
    except AggregationError as exc:
        return RoundResult(CloseStatus.failed, f"{strategy.name}: {exc}", rejected=rejected)
    timings["aggregate_ms"] = (time.perf_counter() - start) * 1e3
    selected = np.zeros(n, dtype=bool)
    selected[members[result.selected]] = True

    aggregate = result.vector
    noise_std = None
    if params.dp is not None:
        noise_std = gaussian_noise_std(params.dp.clip_norm, params.dp.noise_multiplier, members.size)
        aggregate = aggregate + rng.normal(0.0, noise_std, size=aggregate.shape).astype(np.float32)
    return _score_and_decide(
        inputs,
        strategy,
        result,
        aggregate,
        X,
        samples,
        eligible,
        selected,
        rejected,
        timings,
        noise_std,
        accountant,
    )


def _charge_privacy(dp: DpParams, rounds_spent: int) -> PrivacyAccountant:
    """The accountant after this round (full participation), or :class:`PrivacyBudgetExceeded`."""
    return PrivacyAccountant(dp.noise_multiplier, 1.0, dp.delta, dp.epsilon_budget, rounds_spent).charge()


def _too_few(
    inputs: RoundInputs,
    usable: int,
    needed: int,
    below_minimum: int,
    rejected: tuple[tuple[int, str], ...],
    now: datetime,
    detail: str | None = None,
) -> RoundResult:
    """Wait for more updates (extend the deadline) while extensions remain, else fail; say why."""
    params = inputs.params
    why = f"only {usable} usable updates of the {needed} needed"
    if below_minimum:
        why += f" ({below_minimum} more below min_reputation {params.min_reputation:g})"
    if detail:
        why += f": {detail}"
    if inputs.extensions < params.max_round_extensions:
        return RoundResult(
            CloseStatus.extended,
            f"{why}; deadline extended",
            extend_to=now + timedelta(seconds=params.round_duration),
        )
    return RoundResult(CloseStatus.failed, f"{why}, after {inputs.extensions} extensions", rejected=rejected)


def _rewards(
    inputs: RoundInputs, fitness: np.ndarray, reputation: np.ndarray, payable: np.ndarray
) -> tuple[list[int], RewardTree | None]:
    """Rewards of the payable clients only (so the budget is shared among them), and their Merkle tree."""
    params = inputs.params
    amounts = [0] * len(inputs.clients)
    paid = np.flatnonzero(payable)
    if paid.size:
        for i, amount in zip(
            paid.tolist(),
            reward_amounts(
                fitness[paid],
                reputation[paid],
                params.base_reward,
                params.round_reward_budget,
                params.scoring,
            ),
            strict=True,
        ):
            amounts[i] = amount
    owed = {c.address: a for c, a in zip(inputs.clients, amounts, strict=True) if a > 0}
    return amounts, RewardTree.build(inputs.round_id, owed) if owed else None


def _evidence(inputs: RoundInputs, s: RoundScores, eligible: np.ndarray, i: int) -> tuple[Finding, ...]:
    """Why client ``i`` was flagged or left out, beyond its scores (stored on its contribution)."""
    out = []
    if s.direction[i]:
        confirmed = s.peer_outlier is None or bool(s.peer_outlier[i])
        out.append(
            Finding(
                Evidence.direction_outlier,
                f"cosine {s.cosine[i]:.3f} to the server's reference update, "
                f"solo gain {s.solo_gain[i]:.3g} on the validation data"
                + ("" if confirmed else "; not counted toward slashing: it agrees with the other updates"),
            )
        )
    if s.boosted[i]:
        out.append(
            Finding(
                Evidence.norm_outlier,
                f"norm {s.norms[i]:.3g}, at least {inputs.params.reputation.evidence_norm_ratio:g} x "
                "the round's median norm",
            )
        )
    if s.copied[i]:
        of_reference = s.copies_reference is not None and bool(s.copies_reference[i])
        what = "the server's reference update" if of_reference else "the last public model change"
        out.append(Finding(Evidence.public_copy, f"cosine of at least 0.995 to {what}"))
    if not eligible[i]:
        out.append(
            Finding(
                Evidence.below_min_reputation,
                f"{inputs.clients[i].reputation:g} < {inputs.params.min_reputation:g}",
            )
        )
    return tuple(out)


def _scores(
    inputs: RoundInputs,
    base: np.ndarray,
    X: np.ndarray,
    result: Aggregated,
    eligible: np.ndarray,
    selected: np.ndarray,
    batch: ValidationBatch | None,
    claims: np.ndarray,
) -> RoundScores:
    """Every valid client's scores and reference evidence (:func:`aggregator.scoring.round.score_round`)."""
    params = inputs.params

    def loss_of(delta: np.ndarray) -> float | np.ndarray:
        return inputs.losses(unflatten(base + delta, inputs.spec))

    # The strategy's coefficients are over the eligible rows; clients below min_reputation have none.
    coefficients = None
    if result.coefficients is not None:
        coefficients = np.zeros(len(inputs.clients))
        coefficients[np.flatnonzero(eligible)] = result.coefficients
    return score_round(
        loss_of,
        X,
        inputs.reference,
        coefficients,
        np.flatnonzero(selected),
        np.array([c.submitted_at.timestamp() for c in inputs.clients]),
        inputs.deadline.timestamp(),
        params.scoring,
        params.reputation,
        inputs.public_change,
        batch,
        claims,
        inputs.score_sample,
        # The rule's inner products describe X's rows only when it aggregated all of them.
        result.products if bool(eligible.all()) else None,
        np.array([c.participant_id == inputs.public_change_author for c in inputs.clients], dtype=bool),
        # Rows below min_reputation are scored but do not set the round's evidence level.
        eligible,
        # The server's reference as a member of the aggregate (the guarded rule's option): nobody's share.
        result.reference_coefficient,
    )


def _score_and_decide(
    inputs: RoundInputs,
    strategy: Strategy,
    result: Aggregated,
    aggregate: np.ndarray,
    X: np.ndarray,
    samples: SampleWeights,
    eligible: np.ndarray,
    selected: np.ndarray,
    rejected: tuple[tuple[int, str], ...],
    timings: dict[str, float],
    noise_std: float | None,
    accountant: PrivacyAccountant | None,
) -> RoundResult:
    params = inputs.params
    base = flatten(inputs.weights, inputs.spec)
    start = time.perf_counter()
    batch = inputs.batch()
    s = _scores(inputs, base, X, result, eligible, selected, batch, samples.capped)
    timings["score_ms"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    byzantine = s.evidence
    reputation_before = np.array([c.reputation for c in inputs.clients], dtype=np.float64)
    # What each update adds (quality > 0, or kept with a share not significantly harmful to the aggregate:
    # aggregator.scoring.scores.payable with every row eligible): only such an update raises a reputation,
    # and every eligible one without evidence is paid by its fitness (see the module docstring).
    everyone = np.ones(len(inputs.clients), dtype=bool)
    adds = payable(
        everyone, ~everyone, s.quality, selected, s.marginal, s.marginal_stderr, params.scoring.novelty_z
    )
    # Below where everyone starts, only resolvably useful work raises a reputation (update_reputation).
    resolved = (
        None
        if s.novel_gain is None
        else resolved_gains(s.novel_gain, s.novel_stderr, params.scoring.novelty_z)
    )
    reputation_after = update_reputation(
        reputation_before, s.fitness, byzantine, params.reputation, adds, resolved
    )
    paid = eligible & ~byzantine & adds
    amounts, tree = _rewards(inputs, s.fitness, reputation_after, paid)

    # The model takes the multiple of the aggregate that lowers the validation loss most, and only if the
    # loss does not rise (rollback.line_search_decision): a loss that may rise a little each round is an
    # attacker's budget; a refused round leaves the next one its own search (never a permanent freeze).
    # The server's own reference step is the floor: it replaces an aggregate it beats by a resolved margin.
    decision, change, loss_after, accuracy = _decide(
        inputs,
        base,
        aggregate,
        batch,
        _fallback(inputs, X, s.norms, eligible & ~byzantine, samples.capped),
        _wider(inputs, X, result, eligible),
        result.wider_kind,
    )
    new_weights = unflatten(base + change, inputs.spec)
    timings["decide_ms"] = (time.perf_counter() - start) * 1e3

    outcomes = _client_outcomes(
        inputs, strategy.name, s, eligible, selected, byzantine, amounts, tree, reputation_after
    )
    outcomes.extend(_rejected_outcomes(inputs))
    details: dict[str, Detail] = {**strategy.describe(), **result.details}
    details["sample_weight_cap"] = params.sample_weight_cap
    details["sample_weight_bound"] = samples.bound
    details["sample_claims_capped"] = int(samples.above.sum())
    details["min_reputation"] = params.min_reputation
    # What the round's model is: the rule's aggregate, the server's step, the second candidate, or none
    # (refused); the next close counts its stalled rounds from it (RoundInputs.stalled_rounds).
    details["kept_by"] = decision.kept_by
    # The per-row scores' examples (a subsample above the score budget: their standard errors are the
    # subsample's) of the validation examples the decision used.
    details["validation_examples"] = s.examples
    details["score_examples"] = s.examples_used
    return RoundResult(
        CloseStatus.aggregated,
        rejected=rejected,
        clients=tuple(outcomes),
        new_weights=new_weights,
        activate=decision.activate,
        aggregate=aggregate,
        step=decision.step,
        record=AggregationRecord(
            strategy=strategy.name,
            params=details,
            holdout_loss_before=s.loss_before,
            holdout_loss_after=loss_after,
            holdout_accuracy=accuracy,
            rolled_back=not decision.activate,
            decision=decision.reason,
            dp_noise_std=noise_std,
            epsilon_spent=accountant.epsilon_spent if accountant else None,
            rewards_root="0x" + (tree.root.hex() if tree else "00" * 32),
            total_reward_wei=sum(amounts),
            durations_ms=timings,
        ),
    )


def _fallback(
    inputs: RoundInputs, X: np.ndarray, norms: np.ndarray, counted: np.ndarray, claims: np.ndarray
) -> Callable[[], np.ndarray | None] | None:
    """The second candidate of a round whose rule's aggregate is refused (:func:`_decide`): the mean of
    the ``counted`` rows (eligible, no evidence this round) weighted by their bounded sample ``claims``,
    each row clipped to their median norm (:func:`clipped_mean`), built only when asked for. None (no
    second candidate) before the federation has stalled (``stalled_rounds`` below
    :data:`aggregator.round.rollback.FALLBACK_AFTER_STALLED`), and under differential privacy, whose noise
    and accounting cover the rule's aggregate only."""
    if inputs.stalled_rounds < rollback.FALLBACK_AFTER_STALLED:
        return None
    if inputs.params.dp is not None or getattr(inputs.strategy, "noise", None) is not None:
        return None
    return lambda: clipped_mean(X, claims, counted, norms)


def _wider(
    inputs: RoundInputs, X: np.ndarray, result: Aggregated, eligible: np.ndarray
) -> Callable[[], np.ndarray] | None:
    """The rule's other aggregate of the same rows (``Aggregated.wider``: the guarded rule's wider clip, an
    option), built only when asked for; None when the rule offers none, and under differential privacy,
    whose noise and accounting cover the rule's aggregate only."""
    if result.wider is None:
        return None
    if inputs.params.dp is not None or getattr(inputs.strategy, "noise", None) is not None:
        return None
    coefficients = np.zeros(X.shape[0])
    coefficients[np.flatnonzero(eligible)] = result.wider
    part = np.float32(result.wider_reference)
    reference = None if inputs.reference is None else np.asarray(inputs.reference, dtype=np.float32).ravel()

    def candidate() -> np.ndarray:
        out: np.ndarray = (coefficients.astype(np.float32) @ X).astype(np.float32, copy=False)
        if part and reference is not None:  # the reference's part (the guarded rule's reference member)
            out += part * reference
        return out

    return candidate


def clipped_mean(
    X: np.ndarray, claims: np.ndarray, counted: np.ndarray, norms: np.ndarray | None = None
) -> np.ndarray | None:
    """sum_i w_i min(1, m / |x_i|) x_i over the ``counted`` rows i of ``X`` with a positive norm, w the
    ``claims`` normalised over them and m their median norm: FedAvg with norm bounding (float32 (d,));
    None when no counted row has a positive norm. ``norms``: the rows' norms when the caller has them (the
    scores'), else one pass computes them."""
    norms = row_norms(X) if norms is None else np.asarray(norms, dtype=np.float64)
    rows = np.asarray(counted, dtype=bool) & (norms > 0) & np.isfinite(norms)
    if not rows.any():
        return None
    weight = np.where(rows, np.asarray(claims, dtype=np.float64), 0.0)
    if not weight.sum() > 0:
        weight = rows.astype(np.float64)
    bound = float(np.median(norms[rows]))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(rows, np.minimum(1.0, bound / np.maximum(norms, 1e-300)), 0.0)
    coefficients = (scale * weight / weight.sum()).astype(np.float32)
    mean: np.ndarray = (coefficients @ X).astype(np.float32, copy=False)
    return mean


def _decide(
    inputs: RoundInputs,
    base: np.ndarray,
    aggregate: np.ndarray,
    batch: ValidationBatch | None,
    fallback: Callable[[], np.ndarray | None] | None = None,
    wider: Callable[[], np.ndarray] | None = None,
    wider_kind: str = "wider_clip",
) -> tuple[StepDecision, np.ndarray, float, float | None]:
    """The line search's decision, the model's change it keeps (the aggregate's full step when refused: a
    refused round still records that model, stored as rolled back), and that model's validation loss and
    accuracy. The server's reference step, when the round has one, is the search's descent floor
    (:func:`aggregator.round.rollback.line_search_decision`).

    ``fallback``: when the rule's aggregate (and the floor) is refused, a second candidate, searched and
    kept by the same rule (the validation loss may not rise). Why: a robust rule's gate can leave out
    honest organizations whose data are the ones the model lacks, and its aggregate then points uphill
    round after round. Measured (issue 20, a binary task, Dirichlet(0.5), n = 10, 20 rounds, attack-free):
    two organizations held most of one class, the centre test left them out from round 8, every later
    aggregate raised the validation loss and was refused, 13 rounds in a row (44 of 60 over three seeds),
    and the model stopped 4.8 points below plain FedAvg; the norm-bounded mean of every counted row lowers
    the loss in those rounds (docs/benchmarks.md, "a second candidate when the rule's aggregate is
    refused"). Only as a second candidate, and only in a federation that has stalled (see
    :func:`_fallback`): the rule's aggregate, when kept, is what the round keeps.

    ``wider``: the rule's other aggregate of the same rows (:func:`_wider`), searched by the same rule
    (no floor) and kept instead of what the round would keep only when its per-example validation losses
    are lower by more than :data:`aggregator.round.rollback.WIDER_STANDARD_ERRORS` standard errors of the
    paired difference (the floor's margin): while the validation set cannot tell the two apart the rule's
    own stays. ``wider_kind``: what that aggregate is (``Aggregated.wider_kind``), for the record."""
    at_step, metrics_at = _step_measures(inputs, base, aggregate, batch)
    floor: tuple[np.ndarray, Callable[[float], tuple[float, float | None]]] | None = None
    reference_losses = None
    if inputs.reference is not None:
        reference = np.asarray(inputs.reference, dtype=np.float32).reshape(-1)
        at_reference, reference_metrics = _step_measures(inputs, base, reference, batch)
        floor, reference_losses = (reference, reference_metrics), at_reference(1.0)
    empty = not np.any(aggregate)
    before = at_step(0.0)
    decision = line_search_decision(
        before,
        at_step,
        inputs.params.rollback_threshold,
        reference=reference_losses,
        # No update entered the aggregate: no federation's data for the margin to protect.
        z=0.0 if empty else FLOOR_STANDARD_ERRORS,
        # Read at each round (an option under evaluation; scripts/attack_eval.py sets it per run).
        lengthen=rollback.LENGTHEN_DOUBLINGS,
        hold=rollback.HOLD_STANDARD_ERRORS,
    )
    if empty and decision.activate and not decision.reference:
        # Keeping a zero change would publish a version equal to its parent and erase the last public
        # change (what the free-rider test compares against): refused, the active model stays.
        decision = StepDecision(0.0, 0.0, "the aggregate is zero (no update entered it): nothing to keep")
    if wider is not None and not empty:
        widened = _wider_decision(
            inputs, base, batch, before, decision, at_step, reference_losses, wider(), wider_kind
        )
        if widened is not None:
            return widened
    if decision.reference and floor is not None:
        loss_after, accuracy = floor[1](decision.step)
        return decision, np.float32(decision.step) * floor[0], loss_after, accuracy
    if not decision.activate and not empty and fallback is not None:
        alternative = fallback()
        if alternative is not None and np.any(alternative):
            at_alternative, metrics_alternative = _step_measures(inputs, base, alternative, batch)
            second = line_search_decision(before, at_alternative, inputs.params.rollback_threshold)
            if second.activate:
                why = f"the rule's aggregate refused: {decision.reason}"
                return _kept_candidate(
                    second, alternative, metrics_alternative, "norm-bounded mean", why, fallback=True
                )
    step = np.float32(decision.step if decision.activate else 1.0)
    loss_after, accuracy = metrics_at(float(step))
    return decision, step * aggregate, loss_after, accuracy


def _wider_decision(
    inputs: RoundInputs,
    base: np.ndarray,
    batch: ValidationBatch | None,
    before: float | np.ndarray,
    decision: StepDecision,
    at_step: Callable[[float], float | np.ndarray],
    reference_losses: float | np.ndarray | None,
    candidate: np.ndarray,
    kind: str = "wider_clip",
) -> tuple[StepDecision, np.ndarray, float, float | None] | None:
    """The rule's other candidate's decision (see :func:`_decide`), or None: the round keeps its own."""
    if not np.any(candidate):
        return None
    at_candidate, metrics_candidate = _step_measures(inputs, base, candidate, batch)
    searched = line_search_decision(before, at_candidate, inputs.params.rollback_threshold)
    if not searched.activate:
        return None
    if not decision.activate:
        own = before
    elif decision.reference:
        assert reference_losses is not None
        own = reference_losses
    else:
        own = at_step(decision.step)
    theirs = np.asarray(at_candidate(searched.step), dtype=np.float64)
    if not rollback.resolved_lower(np.asarray(own, dtype=np.float64), theirs, rollback.WIDER_STANDARD_ERRORS):
        return None
    why = f"resolved better than the round's own: {decision.reason}"
    name = _CANDIDATE_NAMES.get(kind, kind)
    return _kept_candidate(searched, candidate, metrics_candidate, name, why, wider=True, kind=kind)


# How the round's decision names the rule's other candidate (Aggregated.wider_kind) when it keeps it.
_CANDIDATE_NAMES = {
    "wider_clip": "wider-clip aggregate",
    "reference_member": "aggregate with the server's reference as a member",
}


def _kept_candidate(
    searched: StepDecision,
    candidate: np.ndarray,
    metrics: Callable[[float], tuple[float, float | None]],
    name: str,
    why: str,
    *,
    fallback: bool = False,
    wider: bool = False,
    kind: str = "wider_clip",
) -> tuple[StepDecision, np.ndarray, float, float | None]:
    """A candidate other than the rule's aggregate kept at its searched step: the decision (its reason names
    the candidate and why it replaced the round's own), the model's change, its loss and accuracy."""
    kept = StepDecision(
        searched.step,
        searched.relative_change,
        f"{searched.reason.replace('of the aggregate', f'of the {name}')} ({why})",
        fallback=fallback,
        wider=wider,
        wider_kind=kind,
    )
    loss_after, accuracy = metrics(searched.step)
    return kept, np.float32(searched.step) * candidate, loss_after, accuracy


def _step_measures(
    inputs: RoundInputs, base: np.ndarray, aggregate: np.ndarray, batch: ValidationBatch | None
) -> tuple[Callable[[float], float | np.ndarray], Callable[[float], tuple[float, float | None]]]:
    """(per-example losses, (mean loss, accuracy)) of the model ``base + step x aggregate`` as functions of
    the step. A built-in model computes the aggregate's first-layer response once and scales it for every
    step (equal to a forward pass of each model up to float32 rounding); any other builds each model."""
    if batch is not None:
        response, head = batch.responses(aggregate[None, :])[0], batch.heads(aggregate[None, :])[0]

        def batched(step: float) -> np.ndarray:
            return batch.losses(np.float32(step) * response, np.float32(step) * head)

        def batched_metrics(step: float) -> tuple[float, float | None]:
            return batch.metrics(np.float32(step) * response, np.float32(step) * head)

        return batched, batched_metrics

    def model(step: float) -> Weights:
        return inputs.weights if step == 0.0 else unflatten(base + np.float32(step) * aggregate, inputs.spec)

    return (lambda step: inputs.losses(model(step))), (lambda step: inputs.metrics(model(step)))


def _client_outcomes(
    inputs: RoundInputs,
    strategy: str,
    s: RoundScores,
    eligible: np.ndarray,
    selected: np.ndarray,
    byzantine: np.ndarray,
    amounts: list[int],
    tree: RewardTree | None,
    reputation_after: np.ndarray,
) -> list[ClientOutcome]:
    """One outcome per valid client, with its Merkle proof when it is paid."""
    counted = s.slash_counted
    return [
        ClientOutcome(
            update_id=c.update_id,
            participant_id=c.participant_id,
            address=c.address,
            quality=float(s.quality[i]),
            timeliness=float(s.timeliness[i]),
            honesty=float(s.honesty[i]),
            fitness=float(s.fitness[i]),
            selected=bool(selected[i]),
            kept=bool(selected[i] and not byzantine[i]),
            byzantine=bool(byzantine[i]),
            reward_wei=amounts[i],
            merkle_proof=tuple("0x" + p.hex() for p in tree.proof(c.address)) if tree and amounts[i] else (),
            reputation_after=float(reputation_after[i]),
            reputation_before=float(c.reputation),
            evidence=_evidence(inputs, s, eligible, i),
            excluded_reason=_excluded_reason(inputs, strategy, s, eligible, selected, byzantine, i),
            slash_counted=bool(counted[i]),
        )
        for i, c in enumerate(inputs.clients)
    ]


def _excluded_reason(
    inputs: RoundInputs,
    strategy: str,
    s: RoundScores,
    eligible: np.ndarray,
    selected: np.ndarray,
    byzantine: np.ndarray,
    i: int,
) -> str | None:
    """Why client ``i``'s update is not in the aggregate, in words its organization can act on; None if kept."""
    if not eligible[i]:
        return (
            f"reputation {inputs.clients[i].reputation:.1f} is below the governed min_reputation "
            f"{inputs.params.min_reputation:g}: the update was scored but not aggregated"
        )
    if byzantine[i]:
        kinds = ", ".join(f.code.value for f in _evidence(inputs, s, eligible, i)) or "evidence"
        return f"flagged as Byzantine ({kinds}): see the evidence"
    if not selected[i]:
        return (
            f"the {strategy} rule left the update out of the aggregate (cosine {s.cosine[i]:.3f} to the "
            "server's reference direction): check that the data is shaped like the model's input contract"
        )
    return None


def _rejected_outcomes(inputs: RoundInputs) -> list[ClientOutcome]:
    """An update that failed decryption or validation scores zero and counts as a Byzantine detection."""
    if not inputs.rejected:
        return []
    config = inputs.params.reputation
    before = np.array([c.reputation for c, _ in inputs.rejected], dtype=np.float64)
    after = update_reputation(before, np.zeros(before.size), np.ones(before.size, dtype=bool), config)
    return [
        ClientOutcome(
            update_id=c.update_id,
            participant_id=c.participant_id,
            address=c.address,
            quality=0.0,
            timeliness=0.0,
            honesty=0.0,
            fitness=0.0,
            selected=False,
            kept=False,
            byzantine=True,
            reward_wei=0,
            merkle_proof=(),
            reputation_after=float(after[k]),
            reputation_before=float(c.reputation),
            evidence=(Finding(Evidence.rejected_update, reason),),
            excluded_reason=f"the update failed validation: {reason}",
        )
        for k, (c, reason) in enumerate(inputs.rejected)
    ]
