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
  node across rounds (:class:`~aggregator.flower.local.LocalRounds`). Nothing is paid: there is no chain.
- **Platform** (``platform=`` a :class:`~fedledger.flower.RoundPlatform`, e.g.
  ``client.flower.FedLedgerPlatform``): the fedledger deployment aggregates. Each Flower round opens a
  fedledger round; the Flower clients (wrapped by ``client.flower``'s bridge) pull and verify the
  platform's model, train with their own Flower code, and submit sealed, EIP-712-signed updates to the API
  under their own wallets. The platform's worker closes the round (the chain's governed rule, scores,
  reputation, slashing, DP) and records it on-chain with a Merkle root of rewards each wallet claims
  itself. The strategy only orchestrates and reads the verified result back, so the Flower server never
  sees an update in the clear and cannot change a score.

Timeliness: Flower hands the strategy every reply at once when the round's timeout ends, and a reply's own
``created_at`` is the client's claim, so in local mode every reply that arrived in time scores 100.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from aggregator.errors import InvalidParameter
from aggregator.flower.local import LocalRounds, LossFn, NodeId, NodeReport, Reply, RoundReport
from aggregator.flower.records import InvalidReply, reply_update
from fedledger.flower import (
    ADDRESS_KEY,
    MODEL_VERSION_KEY,
    RECEIPT_KEY,
    REPLY_RECORD,
    ROUND_KEY,
    SIGNATURE_KEY,
    OpenedRound,
    RoundPlatform,
    Weights,
    reply_signer_matches,
    to_record,
    to_weights,
)

MetricValue = int | float | list[int] | list[float]


def reported_metrics(message: Message) -> dict[str, float]:
    """The numeric metrics a reply carries (all its MetricRecords merged)."""
    out: dict[str, float] = {}
    for record in message.content.metric_records.values():
        out.update({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
    return out


class FedLedgerStrategy(FedAvg):
    """Flower strategy backed by fedledger (see the module docstring for the two modes).

    Parameters
    ----------
    strategy : the aggregation rule, by the names the chain's ``strategy`` parameter uses: ``fedavg``,
        ``trimmed_mean`` (default), ``median``, ``krum``, ``multi_krum``, ``bulyan``, ``reputation``,
        ``centered_clip`` (``fltrust`` needs the server's reference update, which local mode does not train).
        Local mode only: on a platform the governed rule applies.
    f, m, beta, cap, byzantine_fraction : the rule's parameters by name (Krum family / Bulyan ``f`` or
        ``byzantine_fraction``, Multi-Krum ``m``, trimmed mean ``beta`` or ``byzantine_fraction``, reputation
        ``cap``); a parameter the rule does not take is refused.
    governed : any other governed parameter by its chain name (e.g. ``{"weight_quality": 0.5, ...}``,
        ``{"centered_clip_tau": 1.0}``) over the chain's genesis values (``LOCAL_DEFAULTS``).
    holdout : ``(X, y)`` for fedledger's built-in model families (softmax, mlp): every round is then the
        platform's own round computation (``aggregator.round.compute``), with quality scores, the holdout
        loss/accuracy and its rollback rule. ``loss_fn`` (loss of a named-tensor model) gives quality
        scores for any other model.
    initial_reputation : a node's reputation before its first round (the platform's default is 50).
    platform : a :class:`~fedledger.flower.RoundPlatform`; rounds then run on the fedledger deployment.
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
        byzantine_fraction: float | None = None,
        governed: Mapping[str, Any] | None = None,
        holdout: tuple[np.ndarray, np.ndarray] | None = None,
        loss_fn: LossFn | None = None,
        initial_reputation: float = 50.0,
        platform: RoundPlatform | None = None,
        **flower_options: Any,
    ) -> None:
        super().__init__(**flower_options)
        named = {"f": f, "m": m, "beta": beta, "cap": cap, "byzantine_fraction": byzantine_fraction}
        given = {k: v for k, v in named.items() if v is not None}
        self.platform = platform
        self.local: LocalRounds | None = None
        if platform is not None:
            if strategy is not None or given or governed or holdout is not None or loss_fn is not None:
                raise InvalidParameter(
                    "with a fedledger platform the rule, its parameters and the holdout are the deployment's "
                    "(governed on-chain); drop strategy/f/m/beta/cap/byzantine_fraction/governed/holdout/loss_fn or change them by governance"
                )
        else:
            self.local = LocalRounds(
                strategy or "trimmed_mean",
                given,
                governed=governed,
                holdout=holdout,
                loss_fn=loss_fn,
                initial_reputation=initial_reputation,
            )
        self.reputation: dict[Any, float] = self.local.reputation if self.local else {}
        self.history: list[RoundReport] = self.local.history if self.local else []
        self._sent: dict[int, tuple[Weights, float]] = {}
        self._platform_rounds: dict[int, OpenedRound] = {}
        self._addresses: dict[NodeId, str] = {}  # node id -> the wallet its bridge reported (platform mode)

    @property
    def rule(self) -> str:
        """The aggregation rule's name (``platform``: the deployment's governed rule)."""
        return self.local.rule if self.local else "platform"

    @property
    def params(self) -> dict[str, Any]:
        """The rule's parameters, defaults filled in."""
        return dict(self.local.params) if self.local else {}

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
        if self.local is not None:
            self.local.check_sample_size(sample_size)
            weights = to_weights(arrays)
            self.local.check_model(weights)
            self._sent[server_round] = (weights, time.monotonic())
            return super().configure_train(server_round, arrays, config, grid)
        return self._configure_platform(server_round, arrays, ConfigRecord(dict(config)), grid)

    def _configure_platform(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Sample, open a fedledger round for the sampled nodes, send its id.

        The round waits for the nodes actually asked, not for every active organization of the platform
        (which a sample of some of them would never complete, so every round would wait for its deadline):
        once every sampled node's wallet is known (from its earlier replies), the round is opened for that
        cohort: only those wallets may submit and it closes as soon as all of them have. The Flower server
        (an operator) chose them, and all of them count, so a fast minority still decides nothing. A node
        whose wallet the platform has slashed is still asked (it answers with the platform's refusal) but not
        invited or waited for. While some sampled node's wallet is unknown (the first round), the round has
        no cohort: its quorum is the sample, and it closes early only once every active organization has
        submitted, otherwise at its deadline.
        """
        assert self.platform is not None
        messages = list(super().configure_train(server_round, ArrayRecord(), config, grid))
        if not messages:
            return messages
        sampled = [m.metadata.dst_node_id for m in messages]
        known = [self._addresses[n] for n in sampled if n in self._addresses]
        blocked = self.platform.blocked(known) if known else set()
        quorum = sum(1 for n in sampled if self._addresses.get(n, "").lower() not in blocked)
        cohort = None
        if len(known) == len(sampled):
            cohort = sorted({a.lower() for a in known} - blocked) or None
            quorum = len(cohort) if cohort else quorum
        opened = self.platform.open_round(to_weights(arrays), max(1, quorum), cohort)
        self._platform_rounds[server_round] = opened
        for content in {id(m.content): m.content for m in messages}.values():
            sent = content[self.configrecord_key]
            assert isinstance(sent, ConfigRecord)
            sent[ROUND_KEY], sent[MODEL_VERSION_KEY] = opened.round_id, opened.model_version
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new global arrays and the round's metrics; (None, None) keeps the model when a round fails."""
        valid, _errors = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        if self.local is not None:
            return self._aggregate_local(self.local, server_round, valid)
        return self._aggregate_platform(server_round, valid)

    # -------------------------------------------------------------------------------------- local mode
    def _reply(self, message: Message, shapes: dict[str, tuple[int, ...]]) -> Reply:
        node_id, metrics = message.metadata.src_node_id, reported_metrics(message)
        try:
            weights, samples = reply_update(message, shapes, self.arrayrecord_key, self.weighted_by_key)
        except InvalidReply as exc:
            log(WARNING, "node %d: reply rejected: %s", node_id, exc)
            return Reply(node_id, None, None, metrics, rejected=str(exc))
        return Reply(node_id, weights, samples, metrics)

    def _aggregate_local(
        self, local: LocalRounds, server_round: int, valid: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        global_weights, started = self._sent.pop(server_round)
        shapes = {name: tuple(value.shape) for name, value in global_weights.items()}
        new_weights, report = local.run(
            server_round, global_weights, [self._reply(m, shapes) for m in valid], started
        )
        if new_weights is None:
            log(WARNING, "round %d failed, the model is unchanged: %s", server_round, report.failure_reason)
            return None, None
        kept = set(report.kept)
        contents = [m.content for m in valid if m.metadata.src_node_id in kept]
        return to_record(new_weights), self._metrics(report, contents)

    def _metrics(self, report: RoundReport, kept_contents: list[RecordDict]) -> MetricRecord:
        metrics: dict[str, MetricValue] = {}
        if kept_contents:
            try:
                metrics.update(self.train_metrics_aggr_fn(kept_contents, self.weighted_by_key).items())
            except (ValueError, TypeError, KeyError) as exc:  # a client's metrics are its own business
                log(WARNING, "train metrics not aggregated: %s", exc)
        metrics.update(LocalRounds.metrics(report))
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
            node = NodeReport(message.metadata.src_node_id, metrics=reported_metrics(message))
            report.nodes.append(node)
            reply = message.content.config_records.get(REPLY_RECORD)
            if reply is None or reply.get(ROUND_KEY) != opened.round_id or not reply.get(ADDRESS_KEY):
                node.rejected = "the reply carries no fedledger receipt for this round (not a bridge client?)"
                continue
            refused = reply_signer_matches(
                opened.round_id,
                message.metadata.src_node_id,
                str(reply[ADDRESS_KEY]),
                str(reply.get(RECEIPT_KEY, "")),
                reply.get(SIGNATURE_KEY),
            )
            if refused is not None:
                node.rejected = refused
                continue
            node.address, node.samples = str(reply[ADDRESS_KEY]), node.metrics.get(self.weighted_by_key)
            addresses[node.address.lower()] = node
            self._addresses[node.node_id] = node.address
        outcome = self.platform.finish_round(opened.round_id)
        report.status, report.failure_reason = outcome.status, outcome.failure_reason
        report.holdout_accuracy, report.holdout_loss = outcome.holdout_accuracy, outcome.holdout_loss
        for c in outcome.contributions:
            member = addresses.get(c.participant.lower())
            if member is None:
                continue  # a platform participant outside this Flower federation
            node = member
            node.kept, node.byzantine = c.kept, c.byzantine
            node.quality, node.timeliness = c.quality, c.timeliness
            node.honesty, node.fitness = c.honesty, c.fitness
            node.reputation, node.reward_wei = c.reputation_after, c.reward_wei
            self.reputation[node.node_id] = c.reputation_after
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
        return [r.as_dict() for r in self.history]
