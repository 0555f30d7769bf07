"""``FedLedgerStrategy``: fedledger's robust aggregation, contribution scores and reputation as a Flower strategy.

A Flower ``ServerApp`` swaps its strategy for this one (Flower's Message API, ``flwr.serverapp.strategy``)::

    strategy = FedLedgerStrategy("multi_krum", f=2, holdout=(X_val, y_val), min_available_nodes=7)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(...), num_rounds=5)

Two modes:

- **Local** (``platform=None``): the ServerApp aggregates. Each train reply's arrays (the client's local
  weights, as in every Flower strategy) become a delta from the global model; malformed replies are
  rejected (honesty 0, counted as Byzantine) instead of failing the round; the named rule aggregates the
  deltas; every client gets quality (holdout improvement, if a holdout or loss function is given),
  honesty (scale-aware distance to the robust aggregate) and fitness, and a reputation kept per Flower
  node across rounds. Nothing is paid: there is no chain.
- **Platform** (``platform=`` a :class:`RoundPlatform`, e.g. ``client.flower.FedLedgerPlatform``): the
  fedledger deployment aggregates. Each Flower round opens a fedledger round; the Flower clients (wrapped
  by ``client.flower``'s bridge) pull and verify the platform's model, train with their own Flower code,
  and submit sealed, EIP-712-signed updates to the API under their own wallets. The platform's worker
  closes the round (the chain's governed rule, scores, reputation, slashing, DP) and records it on-chain
  with a Merkle root of rewards each wallet claims itself. The strategy only orchestrates and reads the
  verified result back, so the Flower server never sees an update in the clear and cannot change a score.

Timeliness: Flower hands the strategy every reply at once when the round's timeout ends, and a reply's own
``created_at`` is the client's claim, so in local mode every reply that arrived in time scores 100.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from aggregator.errors import AggregationError, InvalidParameter, TooFewClients
from aggregator.flower.compute import check_strategy, compute_round, required_clients
from aggregator.flower.records import InvalidReply, flatten, reply_update, unflatten
from aggregator.reputation import ReputationConfig, update_reputation
from aggregator.scoring import ScoringConfig
from fedledger.flower import (
    ADDRESS_KEY,
    MODEL_VERSION_KEY,
    REPLY_RECORD,
    ROUND_KEY,
    OpenedRound,
    RoundPlatform,
    Weights,
    to_record,
    to_weights,
)
from fedledger.models import evaluate


# ------------------------------------------------------------------------------------------ reports
@dataclass
class NodeReport:
    """What one Flower node's reply became in a round: its scores, reputation and (platform) reward."""

    node_id: int
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
    """One round of the strategy: its status, holdout figures and a :class:`NodeReport` per reply."""

    server_round: int
    status: str  # aggregated | failed | POSTED | FAILED
    nodes: list[NodeReport] = field(default_factory=list)
    holdout_loss: float | None = None
    holdout_accuracy: float | None = None
    failure_reason: str | None = None
    platform_round: int | None = None
    seconds: float = 0.0

    @property
    def kept(self) -> list[int]:
        """Node ids whose update went into the aggregate."""
        return [n.node_id for n in self.nodes if n.kept]

    @property
    def excluded(self) -> list[int]:
        """Node ids that replied but were left out (selection, Byzantine detection or a rejected reply)."""
        return [n.node_id for n in self.nodes if not n.kept]


LossFn = Callable[[Weights], float]


def _reported(message: Message) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in message.content.metric_records.values():
        out.update({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
    return out


class FedLedgerStrategy(FedAvg):
    """Flower strategy backed by fedledger (see the module docstring for the two modes).

    Parameters
    ----------
    strategy : the aggregation rule, by the names the chain's ``strategy`` parameter uses: ``fedavg``,
        ``trimmed_mean`` (default), ``median``, ``krum``, ``multi_krum``, ``bulyan``, ``reputation``.
        Local mode only: on a platform the governed rule applies.
    f, m, beta, cap : the rule's parameters by name (Krum family / Bulyan ``f``, Multi-Krum ``m``, trimmed
        mean ``beta``, reputation ``cap``); a parameter the rule does not take is refused.
    holdout : ``(X, y)`` for fedledger's built-in model families (softmax, mlp): quality scores and the
        holdout loss/accuracy after each round. ``loss_fn`` does the same for any other model.
    scoring, reputation_config : fedledger's scoring and reputation constants.
    initial_reputation : a node's reputation before its first round (the platform's default is 50).
    platform : a :class:`RoundPlatform`; rounds then run on the fedledger deployment (platform mode).
    Every other keyword is Flower's ``FedAvg``'s (sampling, record keys, metric aggregation).
    """

    def __init__(
        self,
        strategy: str | None = None,
        *,
        f: int | None = None,
        m: int | None = None,
        beta: float | None = None,
        cap: float | None = None,
        holdout: tuple[np.ndarray, np.ndarray] | None = None,
        loss_fn: LossFn | None = None,
        scoring: ScoringConfig | None = None,
        reputation_config: ReputationConfig | None = None,
        initial_reputation: float = 50.0,
        platform: RoundPlatform | None = None,
        **flower_options: Any,
    ) -> None:
        super().__init__(**flower_options)
        given = {k: v for k, v in {"f": f, "m": m, "beta": beta, "cap": cap}.items() if v is not None}
        self.platform = platform
        if platform is not None:
            if strategy is not None or given or holdout is not None or loss_fn is not None:
                raise InvalidParameter(
                    "with a fedledger platform the rule, its parameters and the holdout are the deployment's "
                    "(governed on-chain); drop strategy/f/m/beta/cap/holdout/loss_fn or change them by governance"
                )
            self.rule, self.params = "platform", {}
        else:
            self.rule = strategy or "trimmed_mean"
            self.params = check_strategy(self.rule, given)
        if holdout is not None and loss_fn is not None:
            raise InvalidParameter("give either holdout=(X, y) or loss_fn, not both")
        if not 0.0 <= initial_reputation <= 100.0:
            raise InvalidParameter(f"initial_reputation must be in [0, 100], got {initial_reputation}")
        self.holdout = holdout
        self.loss_fn = loss_fn
        self.scoring = scoring or ScoringConfig()
        self.reputation_config = reputation_config or ReputationConfig()
        self.initial_reputation = float(initial_reputation)
        self.reputation: dict[int, float] = {}
        self.history: list[RoundReport] = []
        self._sent: dict[int, tuple[Weights, float]] = {}
        self._platform_rounds: dict[int, OpenedRound] = {}

    # -------------------------------------------------------------------------------------- Flower API
    def summary(self) -> None:
        """Log the configuration (Flower calls it when the strategy starts)."""
        if self.platform is not None:
            log(INFO, "\t├──> fedledger platform: governed rule, on-chain rounds and rewards")
        else:
            log(INFO, "\t├──> fedledger rule: %s %s", self.rule, self.params)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes as FedAvg does; in platform mode open a fedledger round first and send its id."""
        if self.fraction_train == 0.0:
            return []
        sample_size = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
        needed = required_clients(self.rule, self.params)
        if self.platform is None and sample_size < needed:
            raise TooFewClients(
                f"{self.rule} with {self.params} needs at least {needed} clients per round, but this strategy "
                f"samples {sample_size}: raise min_train_nodes / fraction_train or lower f"
            )
        if self.platform is not None:
            opened = self.platform.open_round(to_weights(arrays), sample_size)
            self._platform_rounds[server_round] = opened
            config = ConfigRecord(
                {**config, ROUND_KEY: opened.round_id, MODEL_VERSION_KEY: opened.model_version}
            )
            # Bridge clients pull the platform's signed model themselves: nothing unverified is shipped.
            arrays = ArrayRecord()
        else:
            self._sent[server_round] = (to_weights(arrays), time.monotonic())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new global arrays and the round's metrics; (None, None) keeps the model when a round fails."""
        valid, _errors = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        if self.platform is not None:
            return self._aggregate_platform(server_round, valid)
        return self._aggregate_local(server_round, valid)

    # -------------------------------------------------------------------------------------- local mode
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

    def _aggregate_local(
        self, server_round: int, valid: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        global_weights, started = self._sent.pop(server_round)
        shapes = {name: tuple(value.shape) for name, value in global_weights.items()}
        names = list(shapes)
        base = flatten(global_weights, names)
        report = RoundReport(server_round, "aggregated")
        rows: list[np.ndarray] = []
        used: list[tuple[Message, NodeReport]] = []
        for message in valid:
            node = NodeReport(message.metadata.src_node_id, metrics=_reported(message))
            report.nodes.append(node)
            try:
                weights, node.samples = reply_update(
                    message, shapes, self.arrayrecord_key, self.weighted_by_key
                )
            except InvalidReply as exc:
                node.rejected, node.byzantine, node.honesty = str(exc), True, 0.0
                log(WARNING, "node %d: reply rejected: %s", node.node_id, exc)
                continue
            rows.append(flatten(weights, names) - base)
            used.append((message, node))
        self._penalize_rejected(report)
        try:
            if not rows:
                raise TooFewClients("no valid update arrived")
            X = np.stack(rows)
            outcome = compute_round(
                X,
                strategy=self.rule,
                params=self.params,
                samples=np.array([n.samples for _, n in used], dtype=np.float64),
                reputation=np.array([self._reputation_of(n.node_id) for _, n in used]),
                loss_fn=self._loss_fn(base, shapes),
                scoring=self.scoring,
                reputation_config=self.reputation_config,
            )
        except AggregationError as exc:
            report.status, report.failure_reason = "failed", f"{type(exc).__name__}: {exc}"
            report.seconds = time.monotonic() - started
            self.history.append(report)
            log(WARNING, "round %d failed, the model is unchanged: %s", server_round, report.failure_reason)
            return None, None
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
        kept_contents = [m.content for m, n in used if n.kept]
        return to_record(new_weights), self._metrics(report, kept_contents)

    def _reputation_of(self, node_id: int) -> float:
        return self.reputation.get(node_id, self.initial_reputation)

    def _penalize_rejected(self, report: RoundReport) -> None:
        """A reply that is not a usable update costs reputation as a Byzantine detection (as on the platform)."""
        for node in report.nodes:
            if node.rejected is not None:
                node.fitness = 0.0
                node.reputation = float(
                    update_reputation(
                        np.array([self._reputation_of(node.node_id)]),
                        np.array([0.0]),
                        np.array([True]),
                        self.reputation_config,
                    )[0]
                )
                self.reputation[node.node_id] = node.reputation

    def _metrics(self, report: RoundReport, kept_contents: list[RecordDict]) -> MetricRecord:
        metrics: dict[str, int | float | list[int] | list[float]] = {}
        if kept_contents:
            try:
                metrics.update(self.train_metrics_aggr_fn(kept_contents, self.weighted_by_key).items())
            except (ValueError, TypeError, KeyError) as exc:  # a client's metrics are its own business
                log(WARNING, "train metrics not aggregated: %s", exc)
        metrics.update(
            {
                "fedledger-kept": len(report.kept),
                "fedledger-excluded": len(report.excluded),
                "fedledger-rejected": sum(1 for n in report.nodes if n.rejected is not None),
            }
        )
        if report.holdout_loss is not None:
            metrics["fedledger-holdout-loss"] = float(report.holdout_loss)
        if report.holdout_accuracy is not None:
            metrics["fedledger-holdout-accuracy"] = float(report.holdout_accuracy)
        return MetricRecord(metrics)

    # -------------------------------------------------------------------------------------- platform mode
    def _aggregate_platform(
        self, server_round: int, valid: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        assert self.platform is not None
        started = time.monotonic()
        opened = self._platform_rounds.pop(server_round)
        addresses: dict[str, NodeReport] = {}
        report = RoundReport(server_round, "FAILED", platform_round=opened.round_id)
        for message in valid:
            node = NodeReport(message.metadata.src_node_id, metrics=_reported(message))
            report.nodes.append(node)
            reply = message.content.config_records.get(REPLY_RECORD)
            if reply is None or reply.get(ROUND_KEY) != opened.round_id or not reply.get(ADDRESS_KEY):
                node.rejected = "the reply carries no fedledger receipt for this round (not a bridge client?)"
                continue
            node.address, node.samples = str(reply[ADDRESS_KEY]), node.metrics.get(self.weighted_by_key)
            addresses[node.address.lower()] = node
        outcome = self.platform.finish_round(opened.round_id)
        report.status, report.failure_reason = outcome.status, outcome.failure_reason
        report.holdout_accuracy, report.holdout_loss = outcome.holdout_accuracy, outcome.holdout_loss
        for c in outcome.contributions:
            member = addresses.get(str(c["participant"]).lower())
            if member is None:
                continue  # a platform participant outside this Flower federation
            node = member
            node.kept, node.byzantine = bool(c["kept"]), bool(c["byzantine"])
            node.quality, node.timeliness = c.get("quality"), c.get("timeliness")
            node.honesty, node.fitness = c.get("honesty"), c.get("fitness")
            node.reputation, node.reward_wei = c.get("reputation_after"), str(c.get("reward_wei", "0"))
            if node.reputation is not None:
                self.reputation[node.node_id] = float(node.reputation)
        report.seconds = time.monotonic() - started
        self.history.append(report)
        if outcome.weights is None:
            log(WARNING, "fedledger round %d %s: %s", opened.round_id, outcome.status, outcome.failure_reason)
            return None, None
        metrics = self._metrics(report, [])
        metrics["fedledger-round"] = opened.round_id
        return to_record(outcome.weights), metrics

    # -------------------------------------------------------------------------------------- reports
    def report(self) -> list[dict[str, Any]]:
        """Every round so far, JSON-friendly (node ids, kept/excluded, scores, reputation, rewards)."""
        return [asdict(r) | {"kept": r.kept, "excluded": r.excluded} for r in self.history]
