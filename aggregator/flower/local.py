"""A federation's rounds under fedledger's rules without a chain: what both Flower strategies (Message API and
legacy) run in local mode. Flower-free: the strategies turn their replies into :class:`Reply` objects.

The rule and its parameters are a governed-parameter snapshot (:data:`LOCAL_DEFAULTS`, the chain's genesis
values, overlaid with the caller's by-name parameters) read by :class:`~aggregator.round.params.RoundParams`
and built into a strategy object by :func:`aggregator.strategies.build`, exactly as a platform round's close
does. Every round *is* the platform's computation (:func:`aggregator.round.compute.compute_round`: the same
rule, sample cap, scores, Byzantine evidence, reputation and rollback rule), so a node scores in a Flower
federation exactly as the same update would on the platform. What measures the models on the server's data:

- ``holdout=(X, y)`` for one of fedledger's model families: the platform's own forward pass;
- ``loss_fn`` for any other model: its loss per example (the quality scores get standard errors) or its
  mean loss, in place of the forward pass (no accuracy is reported);
- neither: nothing can measure useful work, so every model's loss counts as equal: quality is 100 for every
  update not harmful (as on the platform when the validation data resolves no difference), honesty and the
  evidence come from the updates alone (cosine to their coordinate median, norms), and no holdout figure
  is reported.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from aggregator import strategies
from aggregator.errors import AggregationError, InvalidParameter, TooFewClients, UnknownStrategy
from aggregator.round.compute import ClientMeta, CloseStatus, Evaluation, RoundInputs, compute_round
from aggregator.round.params import RoundParams
from aggregator.scoring.reputation import update_reputation
from fedledger.chain import param_table
from fedledger.flower import Weights
from fedledger.models import UnknownModelFamily, family_of
from fedledger.payload import flatten

NodeId = int | str
# Loss of a model on the server's data: per example (1-D array, which gives the quality scores standard
# errors) or only the mean.
LossFn = Callable[[Weights], "float | np.ndarray"]
# The loss every model gets when nothing measures them (no holdout, no loss function): any positive constant
# gives every update a zero marginal contribution and the round a zero loss change.
UNMEASURED_LOSS = 1.0

# The chain's genesis values (the parameter table, in Python units as a round's snapshot holds them), except
# where a federation without a chain differs: the Flower default rule is trimmed mean, Flower's own sampling
# decides how many nodes a round asks (min_participants 1), and a short round fails rather than waits
# (max_round_extensions 0).
LOCAL_DEFAULTS: dict[str, Any] = param_table.genesis() | {
    "strategy": "trimmed_mean",
    "min_participants": 1,
    "max_round_extensions": 0,
}
# Short names of the rule parameters (FedLedgerStrategy's keywords) -> governed names, and the rules taking them.
ALIASES = {"f": "krum_f", "m": "multi_krum_m", "beta": "trim_fraction", "cap": "reputation_influence_cap"}
TAKES: dict[str, frozenset[str]] = {
    "krum": frozenset({"f", "byzantine_fraction"}),
    "multi_krum": frozenset({"f", "m", "byzantine_fraction"}),
    "bulyan": frozenset({"f", "byzantine_fraction"}),
    "trimmed_mean": frozenset({"beta", "byzantine_fraction"}),
    "reputation": frozenset({"cap"}),
}


def round_params(
    rule: str, params: Mapping[str, Any], governed: Mapping[str, Any] | None = None
) -> RoundParams:
    """The typed parameters of ``rule`` with ``params`` by short name (f, m, beta, cap, byzantine_fraction)
    and any other governed parameter by its chain name in ``governed``; the aggregator's typed errors."""
    if rule not in strategies.names():
        raise UnknownStrategy(f"unknown strategy {rule!r}; valid: {', '.join(strategies.names())}")
    unknown = sorted(set(params) - TAKES.get(rule, frozenset()))
    if unknown:
        allowed = ", ".join(sorted(TAKES.get(rule, frozenset()))) or "none"
        raise InvalidParameter(f"{rule}: unknown parameter(s) {unknown}; settable: {allowed}")
    if "f" in params and "byzantine_fraction" in params:
        raise InvalidParameter(f"{rule}: give either f or byzantine_fraction, not both")
    extra = dict(governed or {})
    foreign = sorted(set(extra) - set(LOCAL_DEFAULTS))
    if foreign:
        raise InvalidParameter(f"unknown governed parameter(s) {foreign}")
    snapshot = {**LOCAL_DEFAULTS, **extra, "strategy": rule}
    if "f" in params or "beta" in params:
        # A fixed f (or trim fraction) asked by name replaces the governed Byzantine share it derives from.
        snapshot.pop("byzantine_fraction")
    snapshot.update({ALIASES.get(k, k): v for k, v in params.items()})
    if snapshot.get("multi_krum_m") is None:
        snapshot["multi_krum_m"] = 0  # None and 0 both mean n - f
    return RoundParams.from_snapshot(snapshot)


@dataclass
class NodeReport:
    """What one Flower node's reply became in a round: its scores, reputation and (platform) reward."""

    node_id: NodeId
    samples: float | None = None
    address: str | None = None
    kept: bool = False
    byzantine: bool = False
    quality: float | None = None
    timeliness: float | None = None
    honesty: float | None = None
    fitness: float | None = None
    reputation: float | None = None
    reward_wei: str | None = None
    rejected: str | None = None  # why the reply was not used as an update
    metrics: dict[str, float] = field(default_factory=dict)  # what the client reported (numeric metrics)


@dataclass
class RoundReport:
    """One round of a strategy: its status, holdout figures and a :class:`NodeReport` per reply."""

    server_round: int
    status: str  # aggregated | failed | POSTED | FAILED
    nodes: list[NodeReport] = field(default_factory=list)
    holdout_loss: float | None = None
    holdout_accuracy: float | None = None
    failure_reason: str | None = None
    platform_round: int | None = None
    seconds: float = 0.0

    @property
    def kept(self) -> list[NodeId]:
        """Node ids whose update went into the aggregate."""
        return [n.node_id for n in self.nodes if n.kept]

    @property
    def excluded(self) -> list[NodeId]:
        """Node ids that replied but were left out (selection, Byzantine detection or a rejected reply)."""
        return [n.node_id for n in self.nodes if not n.kept]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, with the kept and excluded node ids."""
        return asdict(self) | {"kept": self.kept, "excluded": self.excluded}


@dataclass(frozen=True)
class Reply:
    """One client's train reply: its local weights and sample count, or why it is unusable."""

    node_id: NodeId
    weights: Weights | None
    samples: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    rejected: str | None = None


def _placeholder_address(node_id: NodeId) -> str:
    """A stand-in wallet for a Flower node: the computation builds a rewards tree, which nothing pays here."""
    number = (
        node_id if isinstance(node_id, int) else int.from_bytes(hashlib.sha256(node_id.encode()).digest())
    )
    return f"0x{number % 2**160:040x}"


class LocalRounds:
    """fedledger's rule, scores and reputation over a Flower federation's rounds (no chain, nothing paid).

    Reputation is kept per node across rounds. A reply that is not a usable update is rejected and costs
    its node reputation as a Byzantine detection (fitness 0); the round goes on without it.
    """

    def __init__(
        self,
        rule: str,
        params: Mapping[str, Any],
        *,
        governed: Mapping[str, Any] | None = None,
        holdout: tuple[np.ndarray, np.ndarray] | None = None,
        loss_fn: LossFn | None = None,
        initial_reputation: float = 50.0,
    ) -> None:
        if holdout is not None and loss_fn is not None:
            raise InvalidParameter("give either holdout=(X, y) or loss_fn, not both")
        if not 0.0 <= initial_reputation <= 100.0:
            raise InvalidParameter(f"initial_reputation must be in [0, 100], got {initial_reputation}")
        self.round_params = round_params(rule, params, governed)
        self.strategy = strategies.build(self.round_params)
        self.rule = rule
        self.params = self.strategy.describe()
        self.holdout, self.loss_fn = holdout, loss_fn
        self.initial_reputation = float(initial_reputation)
        self.reputation: dict[NodeId, float] = {}
        self.history: list[RoundReport] = []

    @property
    def required_clients(self) -> int:
        """Updates one round needs (2f + 3 for the Krum family, 4f + 3 for Bulyan)."""
        return max(self.round_params.min_participants, self.strategy.required_clients())

    def check_sample_size(self, sample_size: int) -> None:
        """Refuse a configuration that could never aggregate (too few nodes asked per round)."""
        if sample_size < self.required_clients:
            raise TooFewClients(
                f"{self.rule} with {self.params} needs at least {self.required_clients} clients per round, but "
                f"the strategy samples {sample_size}: raise min_train_nodes / fraction_train or lower f"
            )

    def reputation_of(self, node_id: NodeId) -> float:
        """The node's reputation now (``initial_reputation`` before its first round)."""
        return self.reputation.get(node_id, self.initial_reputation)

    def run(
        self, server_round: int, global_weights: Weights, replies: list[Reply], started: float
    ) -> tuple[Weights | None, RoundReport]:
        """One round: the new global weights (None: the round failed and the model stays) and its report."""
        shapes = {name: tuple(value.shape) for name, value in global_weights.items()}
        report = RoundReport(server_round, "aggregated")
        used: list[tuple[Reply, NodeReport]] = []
        for reply in replies:
            node = NodeReport(reply.node_id, samples=reply.samples, metrics=dict(reply.metrics))
            report.nodes.append(node)
            if reply.rejected is not None or reply.weights is None:
                node.rejected = reply.rejected or "no update"
                self._penalize(node)
            else:
                used.append((reply, node))
        try:
            if not used:
                raise TooFewClients("no valid update arrived")
            base = flatten(global_weights, shapes)
            X = np.stack([flatten(r.weights, shapes) - base for r, _ in used if r.weights is not None])
            self.check_model(global_weights)
            new_weights = self._round(server_round, global_weights, shapes, X, used, report)
        except AggregationError as exc:
            report.status, report.failure_reason = "failed", f"{type(exc).__name__}: {exc}"
            new_weights = None
        report.seconds = time.monotonic() - started
        self.history.append(report)
        return new_weights, report

    def check_model(self, weights: Weights) -> None:
        """Refuse a holdout for a model fedledger's forward pass does not know (before a round is asked)."""
        if self.holdout is None:
            return
        try:
            family_of(weights)
        except UnknownModelFamily:
            raise InvalidParameter(
                f"holdout=(X, y) scores fedledger's model families (softmax, mlp); tensors {sorted(weights)} are "
                "none of them: give loss_fn= instead"
            ) from None

    def _evaluation(self) -> Evaluation | None:
        """What measures a model on the server's data instead of the built-in forward pass on ``holdout``."""
        if self.holdout is not None:
            return None
        loss_fn = self.loss_fn
        if loss_fn is not None:
            return lambda weights: (loss_fn(weights), None)
        return lambda weights: (UNMEASURED_LOSS, None)

    def _round(
        self,
        server_round: int,
        global_weights: Weights,
        shapes: dict[str, tuple[int, ...]],
        X: np.ndarray,
        used: list[tuple[Reply, NodeReport]],
        report: RoundReport,
    ) -> Weights | None:
        """The platform's own round computation (every reply arrived in time: timeliness 100)."""
        now = datetime.now(UTC)
        clients = tuple(
            ClientMeta(
                i,
                i,
                _placeholder_address(node.node_id),
                max(1, int(reply.samples or 1)),
                now,
                self.reputation_of(node.node_id),
            )
            for i, (reply, node) in enumerate(used)
        )
        result = compute_round(
            RoundInputs(
                round_id=server_round,
                params=self.round_params,
                opened_at=now,
                deadline=now + timedelta(seconds=self.round_params.round_duration),
                extensions=0,
                clients=clients,
                deltas=X,
                rejected=(),
                weights=global_weights,
                spec=shapes,
                holdout=self.holdout,
                evaluate=self._evaluation(),
            ),
            np.random.default_rng(server_round),
            now,
        )
        if result.status != CloseStatus.aggregated or result.new_weights is None or result.record is None:
            raise TooFewClients(result.reason or f"the round {result.status}")
        for outcome, (_, node) in zip(result.clients, used, strict=True):
            node.kept, node.byzantine = outcome.kept, outcome.byzantine
            node.quality, node.timeliness = outcome.quality, outcome.timeliness
            node.honesty, node.fitness = outcome.honesty, outcome.fitness
            node.reputation = outcome.reputation_after
            self.reputation[node.node_id] = outcome.reputation_after
        record = result.record
        measured = self.holdout is not None or self.loss_fn is not None
        if not result.activate:  # the platform's rollback rule: a degrading aggregate is not adopted
            report.status, report.failure_reason = "rolled_back", record.decision
            report.holdout_loss = record.holdout_loss_before if measured else None
            return None
        report.holdout_loss = record.holdout_loss_after if measured else None
        report.holdout_accuracy = record.holdout_accuracy
        return {name: np.asarray(value, dtype=np.float32) for name, value in result.new_weights.items()}

    def _penalize(self, node: NodeReport) -> None:
        node.byzantine, node.honesty, node.fitness = True, 0.0, 0.0
        node.reputation = float(
            update_reputation(
                np.array([self.reputation_of(node.node_id)]),
                np.array([0.0]),
                np.array([True]),
                self.round_params.reputation,
            )[0]
        )
        self.reputation[node.node_id] = node.reputation

    @staticmethod
    def metrics(report: RoundReport) -> dict[str, float | int]:
        """The round's fedledger figures as Flower metrics (numbers only)."""
        out: dict[str, float | int] = {
            "fedledger-kept": len(report.kept),
            "fedledger-excluded": len(report.excluded),
            "fedledger-rejected": sum(1 for n in report.nodes if n.rejected is not None),
        }
        if report.holdout_loss is not None:
            out["fedledger-holdout-loss"] = float(report.holdout_loss)
        if report.holdout_accuracy is not None:
            out["fedledger-holdout-accuracy"] = float(report.holdout_accuracy)
        return out
