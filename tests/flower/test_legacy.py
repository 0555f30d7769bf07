"""FedLedgerLegacyStrategy on Flower's legacy strategy API, with real Flower objects (client manager, fit
instructions and results): the same rule, scores and reputation as the Message-API strategy."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from aggregator.errors import InvalidParameter, TooFewClients
from aggregator.flower import FedLedgerLegacyStrategy
from fedledger.datasets import digits_split
from fedledger.models import init_softmax, train_softmax

NAMES = ["dense.weight", "dense.bias"]


class Proxy(ClientProxy):
    """A registered client as the legacy server sees it; the strategy only reads ``cid``."""

    def get_properties(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def manager(n: int) -> SimpleClientManager:
    clients = SimpleClientManager()
    for i in range(n):
        clients.register(Proxy(str(1000 + i)))
    return clients


def test_legacy_rounds_exclude_sign_flippers_and_reject_malformed_results() -> None:
    X, y, X_hold, y_hold = digits_split()
    strategy = FedLedgerLegacyStrategy(
        "multi_krum",
        f=2,
        holdout=(X_hold, y_hold),
        param_names=NAMES,
        min_fit_clients=8,
        min_available_clients=8,
    )
    clients = manager(8)
    parts = np.array_split(np.random.default_rng(1).permutation(len(y)), 7)
    weights = init_softmax(64, 10)
    for server_round in (1, 2):
        parameters = ndarrays_to_parameters([weights[n] for n in NAMES])
        instructions = strategy.configure_fit(server_round, parameters, clients)
        assert len(instructions) == 8
        results = []
        for i, (proxy, ins) in enumerate(sorted(instructions, key=lambda pair: pair[0].cid)):
            sent = dict(zip(NAMES, parameters_to_ndarrays(ins.parameters), strict=True))
            if i == 7:  # a malformed result: one tensor only
                arrays = [sent["dense.weight"]]
            else:
                local = train_softmax(
                    sent, X[parts[i]], y[parts[i]], epochs=2, lr=0.5, batch=32, rng=np.random.default_rng(i)
                )
                if i >= 5:
                    local = {k: sent[k] - 4 * (local[k] - sent[k]) for k in NAMES}
                arrays = [local[n] for n in NAMES]
            results.append(
                (proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), len(parts[i % 7]), {}))
            )
        new, metrics = strategy.aggregate_fit(server_round, results, [])
        assert new is not None
        weights = dict(zip(NAMES, parameters_to_ndarrays(new), strict=True))
        report = strategy.history[-1]
        assert set(report.excluded) == {1005, 1006, 1007}
        assert {n.node_id for n in report.nodes if n.rejected} == {1007}
        assert metrics["fedledger-kept"] == 5 and metrics["fedledger-rejected"] == 1
    assert metrics["fedledger-holdout-accuracy"] > 0.8
    assert max(strategy.reputation[c] for c in (1005, 1006, 1007)) < min(
        strategy.reputation[c] for c in range(1000, 1005)
    )


def test_legacy_refusals() -> None:
    with pytest.raises(InvalidParameter):
        FedLedgerLegacyStrategy("trimmed_mean", beta=0.6)
    strategy = FedLedgerLegacyStrategy("bulyan", f=1, min_fit_clients=5, min_available_clients=5)
    with pytest.raises(TooFewClients):
        strategy.configure_fit(1, ndarrays_to_parameters([np.zeros(3, np.float32)]), manager(5))
