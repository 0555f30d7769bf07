"""``FedLedgerLegacyStrategy``: the same local-mode rounds for Flower's legacy strategy API
(``flwr.server.strategy.Strategy``, ``ServerApp(config=..., strategy=...)`` and ``NumPyClient`` clients).

Only the training side changes; sampling, evaluation and the rest are Flower's legacy ``FedAvg``. Legacy
parameters are unnamed lists: ``param_names`` names them (needed for ``holdout=``, whose evaluation knows
fedledger's model families by tensor name); without it they are named "0", "1", ...
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from logging import WARNING
from typing import Any

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from aggregator.errors import InvalidParameter
from aggregator.flower.local import LocalRounds, LossFn, NodeId, Reply, RoundReport
from aggregator.flower.records import InvalidReply, checked_update
from fedledger.flower import Weights


def _node_id(proxy: ClientProxy) -> NodeId:
    return int(proxy.cid) if proxy.cid.isdigit() else proxy.cid


class FedLedgerLegacyStrategy(FedAvg):
    """Local mode of :class:`~aggregator.flower.FedLedgerStrategy` for the legacy API (same parameters, plus
    ``param_names``; every other keyword is the legacy ``FedAvg``'s)."""

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
        param_names: Sequence[str] | None = None,
        **flower_options: Any,
    ) -> None:
        super().__init__(**flower_options)
        named = {"f": f, "m": m, "beta": beta, "cap": cap, "byzantine_fraction": byzantine_fraction}
        given = {k: v for k, v in named.items() if v is not None}
        self.local = LocalRounds(
            strategy or "trimmed_mean",
            given,
            governed=governed,
            holdout=holdout,
            loss_fn=loss_fn,
            initial_reputation=initial_reputation,
        )
        self.param_names = list(param_names) if param_names is not None else None
        if self.param_names is not None and len(set(self.param_names)) != len(self.param_names):
            raise InvalidParameter(f"param_names must be distinct, got {self.param_names}")
        self.reputation = self.local.reputation
        self.history: list[RoundReport] = self.local.history
        self._sent: dict[int, tuple[Weights, float]] = {}

    def __repr__(self) -> str:
        return f"FedLedgerLegacyStrategy({self.local.rule}, {self.local.params})"

    def _named(self, arrays: list[np.ndarray]) -> Weights:
        names = self.param_names or [str(i) for i in range(len(arrays))]
        if len(names) != len(arrays):
            raise InvalidReply(f"{len(arrays)} arrays for the {len(names)} param_names {names}")
        return {n: np.asarray(a, dtype=np.float32) for n, a in zip(names, arrays, strict=True)}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Legacy FedAvg's sampling; refuses a sample too small for the rule and remembers the global model."""
        instructions = super().configure_fit(server_round, parameters, client_manager)
        if instructions:
            self.local.check_sample_size(len(instructions))
        weights = self._named(parameters_to_ndarrays(parameters))
        self.local.check_model(weights)
        self._sent[server_round] = (weights, time.monotonic())
        return instructions

    def _reply(self, proxy: ClientProxy, res: FitRes, shapes: dict[str, tuple[int, ...]]) -> Reply:
        metrics = {k: float(v) for k, v in res.metrics.items() if isinstance(v, (int, float))}
        try:
            weights = checked_update(self._named(parameters_to_ndarrays(res.parameters)), shapes)
            if not res.num_examples > 0:
                raise InvalidReply(f"num_examples must be positive, got {res.num_examples}")
        except InvalidReply as exc:
            log(WARNING, "client %s: reply rejected: %s", proxy.cid, exc)
            return Reply(_node_id(proxy), None, None, metrics, rejected=str(exc))
        return Reply(_node_id(proxy), weights, float(res.num_examples), metrics)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """fedledger's round over the fit results; (None, {}) keeps the model when the round fails."""
        global_weights, started = self._sent.pop(server_round)
        shapes = {name: tuple(value.shape) for name, value in global_weights.items()}
        replies = [self._reply(proxy, res, shapes) for proxy, res in results]
        new_weights, report = self.local.run(server_round, global_weights, replies, started)
        if new_weights is None:
            log(WARNING, "round %d failed, the model is unchanged: %s", server_round, report.failure_reason)
            return None, {}
        metrics: dict[str, Scalar] = {}
        if self.fit_metrics_aggregation_fn is not None:
            kept = set(report.kept)
            metrics.update(
                self.fit_metrics_aggregation_fn(
                    [(res.num_examples, res.metrics) for proxy, res in results if _node_id(proxy) in kept]
                )
            )
        metrics.update(LocalRounds.metrics(report))
        return ndarrays_to_parameters(list(new_weights.values())), metrics

    def report(self) -> list[dict[str, Any]]:
        """Every round so far, JSON-friendly (client ids, kept/excluded, scores, reputation)."""
        return [r.as_dict() for r in self.history]
