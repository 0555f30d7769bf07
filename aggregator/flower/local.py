"""A federation's rounds under fedledger's rules without a chain: what both Flower strategies (Message API and
legacy) run in local mode. Flower-free: the strategies turn their replies into :class:`Reply` objects."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from aggregator.errors import AggregationError, InvalidParameter, TooFewClients
from aggregator.flower.compute import check_strategy, compute_round, required_clients
from aggregator.flower.records import flatten, unflatten
from aggregator.reputation import ReputationConfig, update_reputation
from aggregator.scoring import ScoringConfig
from fedledger.flower import Weights
from fedledger.models import evaluate

NodeId = int | str
LossFn = Callable[[Weights], float]


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


class LocalRounds:
    """fedledger's rule, scores and reputation over a Flower federation's rounds (no chain, nothing paid).

    Reputation is kept per node across rounds. A reply that is not a usable update counts as a Byzantine
    detection (fitness 0), as an undecryptable or mis-shaped update does on the platform.
    """

    def __init__(
        self,
        rule: str,
        params: Mapping[str, Any],
        *,
        holdout: tuple[np.ndarray, np.ndarray] | None = None,
        loss_fn: LossFn | None = None,
        scoring: ScoringConfig | None = None,
        reputation_config: ReputationConfig | None = None,
        initial_reputation: float = 50.0,
    ) -> None:
        if holdout is not None and loss_fn is not None:
            raise InvalidParameter("give either holdout=(X, y) or loss_fn, not both")
        if not 0.0 <= initial_reputation <= 100.0:
            raise InvalidParameter(f"initial_reputation must be in [0, 100], got {initial_reputation}")
        self.rule = rule
        self.params = check_strategy(rule, params)
        self.holdout, self.loss_fn = holdout, loss_fn
        self.scoring = scoring or ScoringConfig()
        self.reputation_config = reputation_config or ReputationConfig()
        self.initial_reputation = float(initial_reputation)
        self.reputation: dict[NodeId, float] = {}
        self.history: list[RoundReport] = []

    @property
    def required_clients(self) -> int:
        """Updates one round needs (2f + 3 for the Krum family, 4f + 3 for Bulyan)."""
        return required_clients(self.rule, self.params)

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

    def _loss_fn(
        self, base: np.ndarray, shapes: Mapping[str, tuple[int, ...]]
    ) -> Callable[[np.ndarray], float] | None:
        if self.holdout is not None:
            X, y = self.holdout
            return lambda delta: evaluate(unflatten(base + delta, shapes), X, y)[0]
        if self.loss_fn is not None:
            loss_fn = self.loss_fn
            return lambda delta: float(loss_fn(unflatten(base + delta, shapes)))
        return None

    def run(
        self, server_round: int, global_weights: Weights, replies: list[Reply], started: float
    ) -> tuple[Weights | None, RoundReport]:
        """One round: the new global weights (None: the round failed and the model stays) and its report."""
        shapes = {name: tuple(value.shape) for name, value in global_weights.items()}
        names = list(shapes)
        base = flatten(global_weights, names)
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
            X = np.stack([flatten(r.weights, names) - base for r, _ in used if r.weights is not None])
            outcome = compute_round(
                X,
                strategy=self.rule,
                params=self.params,
                samples=np.array([r.samples for r, _ in used], dtype=np.float64),
                reputation=np.array([self.reputation_of(n.node_id) for _, n in used]),
                loss_fn=self._loss_fn(base, shapes),
                scoring=self.scoring,
                reputation_config=self.reputation_config,
            )
        except AggregationError as exc:
            report.status, report.failure_reason = "failed", f"{type(exc).__name__}: {exc}"
            report.seconds = time.monotonic() - started
            self.history.append(report)
            return None, report
        for i, (_, node) in enumerate(used):
            node.kept, node.byzantine = bool(outcome.kept[i]), bool(outcome.byzantine[i])
            node.quality, node.timeliness = float(outcome.quality[i]), float(outcome.timeliness[i])
            node.honesty, node.fitness = float(outcome.honesty[i]), float(outcome.fitness[i])
            node.reputation = float(outcome.reputation[i])
            self.reputation[node.node_id] = node.reputation
        new_weights = unflatten(base + outcome.aggregate, shapes)
        if self.holdout is not None:
            report.holdout_loss, report.holdout_accuracy = evaluate(new_weights, *self.holdout)
        elif outcome.loss_after is not None:
            report.holdout_loss = outcome.loss_after
        report.seconds = time.monotonic() - started
        self.history.append(report)
        return new_weights, report

    def _penalize(self, node: NodeReport) -> None:
        node.byzantine, node.honesty, node.fitness = True, 0.0, 0.0
        node.reputation = float(
            update_reputation(
                np.array([self.reputation_of(node.node_id)]),
                np.array([0.0]),
                np.array([True]),
                self.reputation_config,
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
