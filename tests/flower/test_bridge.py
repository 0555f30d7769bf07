"""The client bridge on real Flower objects and the real API (in-process, on the session's Hardhat node):
an organization's existing Message-API ClientApp and NumPyClient, wrapped once, answer plain Flower rounds
unchanged and take part in a fedledger round (SIWE, verified model, sealed EIP-712-signed submission)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from aggregator.flower import FedLedgerStrategy
from client.errors import ConflictError, TrainingError
from client.flower import FlowerBridge, client_app_fit, fedledger_client_app, numpy_client_fit
from fedledger.datasets import digits_split
from fedledger.flower import (
    ADDRESS_KEY,
    RECEIPT_KEY,
    REPLY_RECORD,
    ROUND_KEY,
    SIGNATURE_KEY,
    reply_signer_matches,
    to_record,
    to_weights,
)
from fedledger.models import init_softmax, train_softmax
from tests.client.conftest import (  # noqa: F401 - fixtures of the client suite (API, session chain)
    client,
    genesis,
    make_org,
    operator,
    settings,
)

FLOWER_ORG = 19  # a dev account no other suite uses on the session chain
X, Y, _, _ = digits_split()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'api.db'}"


def context(node_id: int = 7) -> Context:
    return Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(), run_config={})


def existing_client_app() -> ClientApp:
    """An organization's Flower ClientApp as Flower's Message-API templates write it."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        weights = to_weights(message.content["arrays"])
        local = train_softmax(
            weights, X[:300], Y[:300], epochs=2, lr=0.5, batch=32, rng=np.random.default_rng(0)
        )
        content = RecordDict(
            {"arrays": to_record(local), "metrics": MetricRecord({"num-examples": 300, "train-loss": 0.5})}
        )
        return Message(content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": 300, "accuracy": 0.9})}), reply_to=message
        )

    return app


class ReversedClient(NumPyClient):
    """A NumPyClient whose parameter lists hold the bias first."""

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        b, W = parameters
        return [b + 1.0, W + 1.0], 42, {"seen-shapes": float(W.ndim * 10 + b.ndim)}


def train_message(arrays: ArrayRecord, config: dict[str, Any] | None = None) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config or {})})
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def test_a_plain_flower_round_goes_to_the_existing_client_app_unchanged() -> None:
    inner = existing_client_app()
    wrapped = fedledger_client_app(inner)
    message = train_message(to_record(init_softmax(64, 10)))
    reply = wrapped(message, context())
    expected = inner(message, context())
    for name, value in to_weights(expected.content["arrays"]).items():
        np.testing.assert_array_equal(to_weights(reply.content["arrays"])[name], value)
    evaluated = wrapped(Message(RecordDict(), dst_node_id=7, message_type=MessageType.EVALUATE), context())
    assert evaluated.content["metrics"]["accuracy"] == 0.9


def test_numpy_client_parameter_order_and_the_strategy_accepting_it() -> None:
    weights = init_softmax(64, 10)
    fit = numpy_client_fit(ReversedClient(), ["dense.bias", "dense.weight"])
    local, n, metrics = fit(weights, {})
    assert n == 42 and metrics["seen-shapes"] == 21.0
    np.testing.assert_array_equal(local["dense.weight"], weights["dense.weight"] + 1)
    with pytest.raises(TrainingError, match="param_names"):
        numpy_client_fit(ReversedClient(), ["dense.bias", "hidden.weight"])(weights, {})

    # Through the ClientApp: the reply lists the tensors in the client's order; the strategy takes it.
    app = fedledger_client_app(lambda ctx: ReversedClient(), param_names=["dense.bias", "dense.weight"])
    strategy = FedLedgerStrategy("fedavg", min_train_nodes=1, min_available_nodes=1)

    class OneNode:
        def get_node_ids(self) -> list[int]:
            return [7]

    [sent] = list(strategy.configure_train(1, to_record(weights), ConfigRecord(), OneNode()))  # type: ignore[arg-type]
    reply = app(sent, context())
    assert list(reply.content["arrays"]) == ["dense.bias", "dense.weight"]
    arrays, _ = strategy.aggregate_train(1, [reply])
    assert arrays is not None and strategy.history[-1].kept == [7]
    np.testing.assert_allclose(to_weights(arrays)["dense.bias"], 1.0)


@pytest.mark.chain
@pytest.mark.redis
def test_an_existing_client_app_takes_part_in_a_fedledger_round(
    make_org,  # noqa: F811
    client: TestClient,  # noqa: F811
    operator: dict[str, str],  # noqa: F811
    genesis: dict[str, Any],  # noqa: F811
) -> None:
    opened = client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator)
    assert opened.status_code == 201, opened.text
    round_id = opened.json()["id"]
    org = make_org(FLOWER_ORG)
    wrapped = fedledger_client_app(existing_client_app(), lambda ctx: org, auto_enroll=True)
    # What FedLedgerStrategy sends in platform mode: no arrays, the round in the config.
    message = train_message(ArrayRecord(), {ROUND_KEY: round_id})
    reply = wrapped(message, context())
    assert not reply.has_error()
    receipt = reply.content[REPLY_RECORD]
    assert receipt[ROUND_KEY] == round_id and receipt[ADDRESS_KEY] == org.address
    # Signed by the wallet it names, for this node (what the strategy checks before it believes the wallet).
    assert (
        reply_signer_matches(round_id, 7, org.address, receipt[RECEIPT_KEY], receipt[SIGNATURE_KEY]) is None
    )
    assert reply.content["metrics"]["num-examples"] == 300
    assert client.get(f"/v1/rounds/{round_id}").json()["submissions"] == 1
    # The same organization, asked again for this round, gets the platform's refusal (one update per round).
    again = FlowerBridge(client_app_fit(existing_client_app(), context()), org)
    with pytest.raises(ConflictError):
        again.participate(round_id)
