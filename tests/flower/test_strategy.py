"""FedLedgerStrategy's round logic on real Flower Message objects (no processes): parameters by name with the
aggregator's typed refusals, robust aggregation, scores, reputation, and malformed replies rejected."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from aggregator.errors import InvalidParameter, TooFewClients, UnknownStrategy
from aggregator.flower import FedLedgerStrategy, OpenedRound, PlatformOutcome
from fedledger.datasets import digits_split
from fedledger.devkeys import dev_private_key
from fedledger.flower import (
    ADDRESS_KEY,
    RECEIPT_KEY,
    REPLY_RECORD,
    ROUND_KEY,
    SIGNATURE_KEY,
    reply_statement,
    to_record,
    to_weights,
)
from fedledger.models import init_softmax, train_softmax


class StaticGrid:
    """The few Grid calls a strategy makes when it configures a round (node ids only)."""

    def __init__(self, node_ids: Iterable[int]) -> None:
        self.nodes = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def reply(to: Message, arrays: ArrayRecord | None, samples: int, **metrics: float) -> Message:
    content = RecordDict({"metrics": MetricRecord({"num-examples": samples, **metrics})})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content, reply_to=to)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"strategy": "sgd"}, UnknownStrategy),
        ({"strategy": "median", "f": 1}, InvalidParameter),
        ({"strategy": "trimmed_mean", "beta": 0.5}, InvalidParameter),
        ({"strategy": "multi_krum", "f": -1}, InvalidParameter),
        ({"strategy": "multi_krum", "f": 1, "m": -1}, InvalidParameter),
        ({"strategy": "krum", "f": 1.5}, InvalidParameter),
        ({"strategy": "reputation", "cap": 1.5}, InvalidParameter),
        ({"strategy": "fedavg", "initial_reputation": 120.0}, InvalidParameter),
    ],
)
def test_parameters_are_refused_like_the_aggregator_refuses_them(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        FedLedgerStrategy(**kwargs)


def test_platform_mode_refuses_a_local_rule() -> None:
    class Platform:
        def open_round(self, initial, quorum, cohort=None):  # type: ignore[no-untyped-def]
            return OpenedRound(1, 1)

        def finish_round(self, round_id):  # type: ignore[no-untyped-def]
            return PlatformOutcome(round_id, "FAILED", None)

        def blocked(self, addresses):  # type: ignore[no-untyped-def]
            return set()

    with pytest.raises(InvalidParameter, match="governed on-chain"):
        FedLedgerStrategy("multi_krum", f=1, platform=Platform())


def test_a_round_that_samples_fewer_clients_than_the_rule_needs_is_refused() -> None:
    strategy = FedLedgerStrategy("bulyan", f=1, min_train_nodes=5, min_available_nodes=5)
    with pytest.raises(TooFewClients, match="needs at least 7"):
        strategy.configure_train(1, to_record(init_softmax(64, 10)), ConfigRecord(), StaticGrid(range(5)))


def test_multi_krum_round_excludes_attackers_scores_and_keeps_reputation() -> None:
    X, y, X_hold, y_hold = digits_split()
    weights = init_softmax(64, 10)
    strategy = FedLedgerStrategy(
        "multi_krum", f=2, holdout=(X_hold, y_hold), min_train_nodes=7, min_available_nodes=7
    )
    nodes = [101, 102, 103, 104, 105, 106, 107]
    attackers = {106, 107}
    parts = np.array_split(np.random.default_rng(0).permutation(len(y)), len(nodes))
    accuracies = []
    for server_round in (1, 2):
        messages = list(
            strategy.configure_train(server_round, to_record(weights), ConfigRecord(), StaticGrid(nodes))
        )
        assert sorted(m.metadata.dst_node_id for m in messages) == nodes
        replies = []
        for message, part in zip(sorted(messages, key=lambda m: m.metadata.dst_node_id), parts, strict=True):
            node = message.metadata.dst_node_id
            sent = to_weights(message.content["arrays"])
            local = train_softmax(
                sent, X[part], y[part], epochs=2, lr=0.5, batch=32, rng=np.random.default_rng(node)
            )
            if node in attackers:
                local = {k: sent[k] - 4 * (local[k] - sent[k]) for k in sent}
            replies.append(reply(message, to_record(local), len(part), **{"train-loss": float(node)}))
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        assert arrays is not None and metrics is not None
        weights = to_weights(arrays)
        report = strategy.history[-1]
        assert set(report.excluded) == attackers
        assert metrics["fedledger-kept"] == 5 and metrics["fedledger-excluded"] == 2
        # Flower's sample-weighted mean of the clients' own metrics, over the kept replies only.
        assert 101 <= metrics["train-loss"] <= 105
        by_node = {n.node_id: n for n in report.nodes}
        honest_fitness = min(by_node[n].fitness for n in nodes if n not in attackers)
        assert all(by_node[a].fitness < honest_fitness for a in attackers)
        accuracies.append(metrics["fedledger-holdout-accuracy"])
    assert accuracies[0] > 0.7 and accuracies[1] > accuracies[0]
    assert max(strategy.reputation[a] for a in attackers) < min(
        strategy.reputation[n] for n in nodes if n not in attackers
    )


def test_malformed_replies_are_rejected_not_fatal() -> None:
    weights = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    strategy = FedLedgerStrategy("median", min_train_nodes=4, min_available_nodes=4)
    messages = list(strategy.configure_train(1, to_record(weights), ConfigRecord(), StaticGrid([1, 2, 3, 4])))
    by_node = {m.metadata.dst_node_id: m for m in messages}
    good = {"w": np.full((3, 2), 0.1, np.float32), "b": np.full(2, 0.1, np.float32)}
    replies = [
        reply(by_node[1], to_record(good), 10),
        reply(by_node[2], to_record({k: v * 1.1 for k, v in good.items()}), 10),
        reply(by_node[3], to_record({"w": good["w"]}), 10),  # a tensor missing
        reply(by_node[4], to_record({"w": np.full((3, 2), np.nan, np.float32), "b": good["b"]}), 10),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    report = strategy.history[-1]
    rejected = {n.node_id: n.rejected for n in report.nodes if n.rejected}
    assert set(rejected) == {3, 4} and "missing ['b']" in rejected[3] and "NaN" in rejected[4]
    assert metrics["fedledger-rejected"] == 2
    assert strategy.reputation[3] < 50 and strategy.reputation[4] < 50
    np.testing.assert_allclose(to_weights(arrays)["w"], 0.105, rtol=1e-5)


def test_a_round_without_enough_valid_updates_keeps_the_model() -> None:
    weights = {"w": np.zeros(4, np.float32)}
    strategy = FedLedgerStrategy("krum", f=1, min_train_nodes=5, min_available_nodes=5)
    messages = list(strategy.configure_train(1, to_record(weights), ConfigRecord(), StaticGrid(range(1, 6))))
    replies = [reply(m, to_record({"w": np.ones(4, np.float32)}), 5) for m in messages[:4]]
    replies.append(reply(messages[4], None, 5))  # no arrays at all
    assert strategy.aggregate_train(1, replies) == (None, None)
    report = strategy.history[-1]
    assert report.status == "failed" and "TooFewClients" in (report.failure_reason or "")


def test_message_type_is_flowers_train() -> None:
    strategy = FedLedgerStrategy("fedavg")
    messages = list(
        strategy.configure_train(
            3, to_record({"w": np.zeros(2, np.float32)}), ConfigRecord(), StaticGrid([7, 8])
        )
    )
    assert {m.metadata.message_type for m in messages} == {MessageType.TRAIN}
    assert all(m.content["config"]["server-round"] == 3 for m in messages)


def test_local_defaults_are_the_tables_genesis_values() -> None:
    """LOCAL_DEFAULTS are the parameter table's genesis values (tests/chain checks the contract's against it),
    except the three documented on purpose."""
    from aggregator.flower import LOCAL_DEFAULTS
    from fedledger.chain import param_table

    genesis = param_table.genesis()
    assert set(LOCAL_DEFAULTS) == set(genesis)
    differ = {name for name in genesis if LOCAL_DEFAULTS[name] != genesis[name]}
    assert differ == {"strategy", "min_participants", "max_round_extensions"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"strategy": "krum", "f": 1, "byzantine_fraction": 0.2}, InvalidParameter),
        ({"strategy": "median", "governed": {"no_such_parameter": 1}}, InvalidParameter),
        ({"strategy": "median", "governed": {"weight_quality": 2.0}}, InvalidParameter),
        ({"strategy": "multi_krum", "byzantine_fraction": 0.5}, InvalidParameter),
    ],
)
def test_governed_parameters_are_checked_as_a_rounds_snapshot_is(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        FedLedgerStrategy(**kwargs)


@pytest.mark.parametrize("per_example", [False, True])
def test_any_model_with_a_loss_function(per_example: bool) -> None:
    """A model no built-in forward pass knows (a linear regression here): the same rule and the platform's
    scores, quality from loss_fn (its mean loss, or per-example losses that give standard errors)."""
    rng = np.random.default_rng(3)
    X, true_w = rng.standard_normal((200, 5)).astype(np.float32), np.arange(5, dtype=np.float32)
    y = X @ true_w

    def loss(weights: dict[str, np.ndarray]) -> float | np.ndarray:
        errors = (X @ weights["linear.w"] - y) ** 2
        return errors if per_example else float(np.mean(errors))

    with_holdout = FedLedgerStrategy("median", holdout=(X, y), min_train_nodes=5, min_available_nodes=5)
    with pytest.raises(InvalidParameter, match="loss_fn"):
        with_holdout.configure_train(
            1, to_record({"linear.w": np.zeros(5, np.float32)}), ConfigRecord(), StaticGrid(range(1, 6))
        )

    strategy = FedLedgerStrategy("median", loss_fn=loss, min_train_nodes=5, min_available_nodes=5)
    weights = {"linear.w": np.zeros(5, np.float32)}
    for server_round in (1, 2, 3):
        messages = list(
            strategy.configure_train(
                server_round, to_record(weights), ConfigRecord(), StaticGrid(range(1, 6))
            )
        )
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            w = to_weights(message.content["arrays"])["linear.w"]
            # A tenth of the way: the close's line search takes up to 4x the aggregate, so the model is
            # still short of the solution in round 3 and every round's updates matter.
            step = w - 0.1 * (w - true_w) + rng.normal(0, 0.01, 5).astype(np.float32)
            if node == 5:
                step = w + 50.0 * (w - true_w)  # pushes away from the solution
            replies.append(reply(message, to_record({"linear.w": step.astype(np.float32)}), 40))
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        assert arrays is not None and metrics is not None
        weights = to_weights(arrays)
        report = strategy.history[-1]
        assert report.excluded == [5]
        node5 = next(n for n in report.nodes if n.node_id == 5)
        honest = [n for n in report.nodes if n.node_id != 5]
        assert node5.byzantine and not node5.kept and node5.quality is not None and node5.quality < 50
        # Quality is what an update adds beyond the others (aggregator/scoring/novelty.py): four near-copies of
        # one step add little each, so the honest nodes are told apart from node 5 by fitness, not quality.
        assert all(n.kept and not n.byzantine for n in honest)
        assert node5.fitness is not None and node5.fitness < min(n.fitness or 0 for n in honest)
    assert np.mean(loss(weights)) < 0.2 * np.mean(loss({"linear.w": np.zeros(5, np.float32)}))


@pytest.mark.parametrize("measure", ["holdout", "loss_fn", "nothing"])
def test_a_node_scores_in_flower_as_its_update_would_on_the_platform(measure: str) -> None:
    """One scoring, one result: a Flower round is the platform's round computation, so an update scaled
    x100 (and a sample claim above the cap) scores and is flagged exactly as the platform's close does,
    whether the server's data is a holdout or the caller's loss function. With nothing to measure models
    on, honesty (which comes from the updates alone) is still the platform's, and so is the norm evidence."""
    from datetime import UTC, datetime, timedelta

    from aggregator.flower import LocalRounds, Reply
    from aggregator.round.compute import ClientMeta, RoundInputs, compute_round
    from fedledger.models import example_losses
    from fedledger.payload import flatten, model_shapes

    X, y, X_hold, y_hold = digits_split()
    weights = init_softmax(64, 10)
    parts = np.array_split(np.random.default_rng(1).permutation(len(y)), 6)
    updates = [
        train_softmax(weights, X[p], y[p], epochs=1, lr=0.5, batch=32, rng=np.random.default_rng(k))
        for k, p in enumerate(parts)
    ]
    updates[2] = {n: weights[n] - (updates[2][n] - weights[n]) for n in weights}  # sign-flipped
    updates[3] = {n: weights[n] + 3 * (updates[3][n] - weights[n]) for n in weights}
    updates[4] = {n: weights[n] + 100 * (updates[4][n] - weights[n]) for n in weights}
    samples = [len(p) for p in parts]
    samples[5] *= 50  # above sample_weight_cap x the median claim

    def loss(w: dict[str, np.ndarray]) -> np.ndarray:
        return example_losses(w, X_hold, y_hold)

    if measure == "holdout":
        local = LocalRounds("fedavg", {}, holdout=(X_hold, y_hold))
    elif measure == "loss_fn":
        local = LocalRounds("fedavg", {}, loss_fn=loss)
    else:
        local = LocalRounds("fedavg", {})
    _, report = local.run(
        1,
        weights,
        [Reply(i, u, float(s)) for i, (u, s) in enumerate(zip(updates, samples, strict=True))],
        0.0,
    )

    now = datetime.now(UTC)
    shapes = model_shapes(weights)
    base = flatten(weights, shapes)
    platform = compute_round(
        RoundInputs(
            round_id=1,
            params=local.round_params,
            opened_at=now,
            deadline=now + timedelta(hours=1),
            extensions=0,
            clients=tuple(ClientMeta(i, i, f"0x{i + 1:040x}", s, now, 50.0) for i, s in enumerate(samples)),
            deltas=np.stack([flatten(u, shapes) - base for u in updates]),
            rejected=(),
            weights=weights,
            spec=shapes,
            holdout=(X_hold, y_hold),
        ),
        np.random.default_rng(1),
        now,
    )
    assert len(platform.clients) == len(report.nodes) == 6
    for node, outcome in zip(report.nodes, platform.clients, strict=True):
        assert node.honesty == pytest.approx(outcome.honesty, abs=1e-6), node.node_id
        if measure != "nothing":  # direction evidence needs the update to be harmful alone on the data
            assert node.byzantine == outcome.byzantine, node.node_id
            assert node.quality == pytest.approx(outcome.quality, abs=1e-6), node.node_id
            assert node.fitness == pytest.approx(outcome.fitness, abs=1e-6), node.node_id
    assert report.nodes[4].byzantine and not report.nodes[4].kept
    # Honesty is measured against the updates' coordinate median as a direction, not as closeness to it:
    # a sign-flipped update near the crowd's scale is dishonest.
    assert report.nodes[2].honesty == 0.0


class RecordingPlatform:
    """What a platform-mode strategy asks of the deployment (the rounds it opens), with fixed answers."""

    def __init__(self, blocked: set[str]) -> None:
        self.opened: list[tuple[int, list[str] | None]] = []
        self.refused = blocked

    def open_round(self, initial, quorum, cohort=None):  # type: ignore[no-untyped-def]
        self.opened.append((quorum, cohort))
        return OpenedRound(len(self.opened), 1)

    def finish_round(self, round_id):  # type: ignore[no-untyped-def]
        return PlatformOutcome(round_id, "POSTED", {"w": np.zeros(2, np.float32)})

    def blocked(self, addresses):  # type: ignore[no-untyped-def]
        return {a.lower() for a in addresses} & self.refused


def test_platform_rounds_are_opened_for_the_sampled_organizations_once_their_wallets_are_known() -> None:
    """The early close waits for every active organization unless a round names its cohort: a sample of some
    of them would otherwise wait for every deadline. Round 1 knows no wallet (no cohort, quorum the sample);
    later rounds invite exactly the sampled wallets, minus those the platform blocks."""
    keys = {node: dev_private_key(node) for node in range(1, 5)}
    wallets = {node: Account.from_key(key).address for node, key in keys.items()}
    platform = RecordingPlatform(blocked={wallets[4].lower()})
    strategy = FedLedgerStrategy(platform=platform, min_train_nodes=2, min_available_nodes=4)
    arrays = to_record({"w": np.zeros(2, np.float32)})
    sent = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(range(1, 5))))
    assert platform.opened == [(4, None)]
    replies = []
    for message in sent:
        node = message.metadata.dst_node_id
        # The bridge signs its reply with the organization's wallet (the strategy checks it).
        signed = Account.sign_message(
            encode_defunct(text=reply_statement(1, node, wallets[node], "r")), keys[node]
        ).signature.hex()
        receipt = ConfigRecord(
            {
                ROUND_KEY: 1,
                ADDRESS_KEY: wallets[node],
                RECEIPT_KEY: "r",
                SIGNATURE_KEY: "0x" + signed.removeprefix("0x"),
            }
        )
        replies.append(Message(RecordDict({REPLY_RECORD: receipt}), reply_to=message))
    strategy.aggregate_train(1, replies)

    strategy.fraction_train = 0.75  # three of the four nodes
    second = list(strategy.configure_train(2, arrays, ConfigRecord(), StaticGrid(range(1, 5))))
    sampled = {m.metadata.dst_node_id for m in second}
    invited = sorted(wallets[n].lower() for n in sampled if n != 4)
    assert platform.opened[1] == (len(invited), invited)
    assert all(m.content["config"][ROUND_KEY] == 2 for m in second)
