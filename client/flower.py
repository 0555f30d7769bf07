"""Flower interoperability, organization side (needs ``pip install 'fedledger[flower]'``).

An organization keeps its Flower training code (a ``NumPyClient``) and takes part in fedledger rounds:

    from client.flower import fedledger_client_app, organization_from_context

    app = fedledger_client_app(client_fn, organization_from_context, param_names=["dense.weight", "dense.bias"])

The returned ``ClientApp`` answers a plain Flower train message as any Flower client does (arrays in, fitted
arrays out: it works with ``FedLedgerStrategy`` in local mode and with Flower's own strategies). A train
message that names a fedledger round (``FedLedgerStrategy`` pointed at a deployment) goes through the SDK
instead: wallet sign-in, enrollment check, the platform's model pulled and verified (hash, trusted signer,
on-chain record), ``NumPyClient.fit`` on it, the delta sealed for the server's key, EIP-712 signed with the
organization's wallet and submitted; the reply to the Flower server carries only the receipt. Rewards go to
that wallet (``Organization.claim_rewards``). Without any Flower server, :class:`FlowerBridge` runs the
same ``NumPyClient`` in every fedledger round (``FlowerBridge(client, org).run()``).

:class:`FedLedgerPlatform` is the other half: what ``FedLedgerStrategy(platform=...)`` calls to open
fedledger rounds as the API's operator and read back their verified outcome.

Trust model (platform mode): the fedledger deployment is the aggregator and the chain is the record. The
Flower server only decides when rounds start and who is asked; its login needs no more than the round-runner
role (``FEDLEDGER_ROUND_RUNNER_ADDRESSES``: open and close rounds; no rollback, key rotation or audit log), and
an operator login only to upload a genesis model when the platform has none. It never sees an update in the clear (updates are sealed for
the platform's key), cannot sign for an organization, and cannot change a score, a reward or the
recorded model. Each organization verifies every model it trains on against the trusted model signer
and the on-chain hash, exactly as the SDK does outside Flower.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, MetricRecordValues, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from client.errors import (
    ConfigurationError,
    ConflictError,
    NoOpenRoundError,
    NotFoundError,
    TrainingError,
)
from client.sdk import Organization, Submission
from client.wallet import Wallet
from fedledger.api.client import FedLedgerApi
from fedledger.flower import (
    ADDRESS_KEY,
    MODEL_VERSION_KEY,
    PAYLOAD_HASH_KEY,
    RECEIPT_KEY,
    REPLY_RECORD,
    ROUND_KEY,
    SIGNATURE_KEY,
    OpenedRound,
    PlatformOutcome,
    Weights,
    reply_statement,
    to_record,
    to_weights,
)
from fedledger.payload import encode_weights

ClientFn = Callable[[Context], NumPyClient]
OrganizationFn = Callable[[Context], Organization]
# One local training: (global weights, config) -> (local weights, num_examples, metrics).
FitFn = Callable[[Weights, dict[str, Any]], tuple[Weights, int, dict[str, Any]]]
_METRIC_TYPES = (int, float)


# ------------------------------------------------------------------------------------------ adapters
def _ordered(weights: Mapping[str, np.ndarray], names: Sequence[str] | None) -> list[str]:
    order = list(names) if names is not None else list(weights)
    if sorted(order) != sorted(weights):
        raise TrainingError(
            f"param_names {order} do not name the model's tensors {sorted(weights)}; pass the order your "
            "client's parameter lists use"
        )
    return order


def numpy_client_fit(client: NumPyClient, param_names: Sequence[str] | None = None) -> FitFn:
    """``NumPyClient.fit`` as a :data:`FitFn`; ``param_names`` is the order of its parameter lists."""

    def fit(weights: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
        names = _ordered(weights, param_names)
        result = client.fit([weights[n] for n in names], dict(config))
        try:
            parameters, num_examples, metrics = result
        except (TypeError, ValueError):
            raise TrainingError("NumPyClient.fit must return (parameters, num_examples, metrics)") from None
        if len(parameters) != len(names):
            raise TrainingError(f"fit returned {len(parameters)} arrays, the model has {len(names)} tensors")
        local = {n: np.asarray(p, dtype=np.float32) for n, p in zip(names, parameters, strict=True)}
        return local, int(num_examples), dict(metrics or {})

    return fit


def client_app_fit(
    app: ClientApp,
    context: Context,
    *,
    arrays_key: str = "arrays",
    config_key: str = "config",
    weighted_by_key: str = "num-examples",
) -> FitFn:
    """An existing Message-API ``ClientApp``'s train handler as a :data:`FitFn`: it receives the verified
    model as the ``ArrayRecord`` of a train message, exactly as from a Flower server, and its reply's arrays
    are the local weights."""

    def fit(weights: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
        content = RecordDict({arrays_key: to_record(weights), config_key: ConfigRecord(dict(config))})
        message = Message(content, dst_node_id=context.node_id, message_type=MessageType.TRAIN)
        reply = app(message, context)
        if reply.has_error():
            raise TrainingError(f"the ClientApp's train handler failed: {reply.error.reason}")
        records = reply.content.array_records
        if len(records) != 1 and arrays_key not in records:
            raise TrainingError(f"the ClientApp replied with {len(records)} ArrayRecords; expected one")
        local = to_weights(records[arrays_key] if arrays_key in records else next(iter(records.values())))
        metrics: dict[str, Any] = {}
        for record in reply.content.metric_records.values():
            metrics.update(record)
        if weighted_by_key not in metrics:
            raise TrainingError(f"the ClientApp's reply has no {weighted_by_key!r} metric")
        return local, int(metrics.pop(weighted_by_key)), metrics

    return fit


class _Fit:
    """One local training as a fedledger trainer (``TrainFn``): named tensors in, named tensors out.

    It is also the "data" handed to the SDK: its length is the ``num_examples`` the fit reported, so the
    update is signed with the sample count the organization's own code gives.
    """

    def __init__(self, fit: FitFn, config: Mapping[str, Any]) -> None:
        self.fit, self.config = fit, dict(config)
        self.num_examples: int | None = None
        self.metrics: dict[str, Any] = {}

    def __call__(self, weights: Weights, data: Any, rng: np.random.Generator) -> Weights:
        local, self.num_examples, self.metrics = self.fit(weights, dict(self.config))
        return local

    def __len__(self) -> int:
        if self.num_examples is None:
            raise TrainingError("the sample count is known only after the client's fit has run")
        return self.num_examples


class FlowerBridge:
    """A Flower client's training code taking part in fedledger rounds through an :class:`Organization`.

    ``client`` is a ``NumPyClient`` (``param_names``: the order of the tensors in its parameter lists, by
    default the order the platform's model lists them in) or any :data:`FitFn`, e.g. an existing
    ``ClientApp`` through :func:`client_app_fit`.
    """

    def __init__(
        self,
        client: NumPyClient | FitFn,
        organization: Organization,
        *,
        param_names: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        auto_enroll: bool = False,
    ) -> None:
        self.fit: FitFn = numpy_client_fit(client, param_names) if isinstance(client, NumPyClient) else client
        self.organization = organization
        self.config = dict(config or {})
        self.auto_enroll = auto_enroll
        self.last_fit: _Fit | None = None

    def _fit(self, extra: Mapping[str, Any] | None = None) -> _Fit:
        self.last_fit = _Fit(self.fit, {**self.config, **(extra or {})})
        return self.last_fit

    def participate(
        self, round_id: int | None = None, *, config: Mapping[str, Any] | None = None, wait: bool = False
    ) -> Submission:
        """Train on the verified model of the open round and submit; ``round_id`` pins the round
        (:class:`NoOpenRoundError` if another one is open)."""
        org = self.organization
        if round_id is not None:
            org.check_may_submit(auto_enroll=self.auto_enroll)
            open_id = org.open_round().id
            if open_id != round_id:
                raise NoOpenRoundError(f"asked to train for round {round_id}, but round {open_id} is open")
        fit = self._fit(config)
        return org.participate(fit, trainer=fit, wait=wait, auto_enroll=self.auto_enroll)

    def run(
        self, *, max_rounds: int | None = None, stop: threading.Event | None = None, **options: Any
    ) -> list[Submission]:
        """Take part in every fedledger round (no Flower server involved) until ``stop`` or ``max_rounds``."""
        fit = self._fit()
        return self.organization.run(fit, trainer=fit, max_rounds=max_rounds, stop=stop, **options)


def _numeric(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    return {k: v for k, v in metrics.items() if isinstance(v, _METRIC_TYPES) and not isinstance(v, bool)}


def _fedledger_round(
    message: Message,
    context: Context,
    fit: FitFn,
    organization_fn: OrganizationFn | None,
    auto_enroll: bool,
    config: dict[str, Any],
) -> Message:
    """Answer a train message that names a fedledger round: submit through the SDK, reply with the receipt."""
    if organization_fn is None:
        raise ConfigurationError("a fedledger round asked for this node, but no organization_fn is set")
    organization = organization_fn(context)
    try:
        bridge = FlowerBridge(fit, organization, config=config, auto_enroll=auto_enroll)
        submission = bridge.participate(int(config[ROUND_KEY]))
    finally:
        organization.close()
    statement = reply_statement(
        submission.round_id, context.node_id, organization.address, submission.receipt.receipt_id
    )
    reply = ConfigRecord(
        {
            ROUND_KEY: submission.round_id,
            MODEL_VERSION_KEY: submission.prepared.model_version,
            ADDRESS_KEY: organization.address,
            RECEIPT_KEY: submission.receipt.receipt_id,
            PAYLOAD_HASH_KEY: submission.prepared.payload_hash,
            SIGNATURE_KEY: organization.wallet.sign_message(statement),
        }
    )
    reported = bridge.last_fit.metrics if bridge.last_fit else {}
    metrics: dict[str, MetricRecordValues] = {
        **_numeric(reported),
        "num-examples": submission.prepared.num_samples,
    }
    return Message(RecordDict({REPLY_RECORD: reply, "metrics": MetricRecord(metrics)}), reply_to=message)


def fedledger_client_app(
    client: ClientFn | ClientApp,
    organization_fn: OrganizationFn | None = None,
    *,
    param_names: Sequence[str] | None = None,
    auto_enroll: bool = False,
    arrays_key: str = "arrays",
    config_key: str = "config",
) -> ClientApp:
    """A Flower ``ClientApp`` around the organization's training code (see the module docstring).

    ``client`` is either a ``client_fn(context) -> NumPyClient`` or an existing Message-API ``ClientApp``
    (its train handler then trains in fedledger rounds, and every other message goes to it unchanged).
    ``organization_fn(context)`` builds the organization (wallet, API, chain) when a fedledger round asks
    for it; :func:`organization_from_context` reads it from the SuperNode's node config.
    """
    app = ClientApp()

    def config_of(message: Message) -> dict[str, Any]:
        return dict(message.content.config_records.get(config_key, ConfigRecord()))

    if isinstance(client, ClientApp):
        inner = client

        @app.train()
        def train_app(message: Message, context: Context) -> Message:
            config = config_of(message)
            if ROUND_KEY not in config:
                return inner(message, context)
            fit = client_app_fit(inner, context, arrays_key=arrays_key, config_key=config_key)
            return _fedledger_round(message, context, fit, organization_fn, auto_enroll, config)

        @app.evaluate()
        def evaluate_app(message: Message, context: Context) -> Message:
            return inner(message, context)

        @app.query()
        def query_app(message: Message, context: Context) -> Message:
            return inner(message, context)

        return app

    client_fn = client

    @app.train()
    def train(message: Message, context: Context) -> Message:
        config = config_of(message)
        fit = numpy_client_fit(client_fn(context), param_names)
        if ROUND_KEY in config:
            return _fedledger_round(message, context, fit, organization_fn, auto_enroll, config)
        local, num_examples, metrics = fit(to_weights(message.content.array_records[arrays_key]), config)
        content = RecordDict(
            {
                arrays_key: to_record(local),
                "metrics": MetricRecord({**_numeric(metrics), "num-examples": num_examples}),
            }
        )
        return Message(content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        weights = to_weights(message.content.array_records[arrays_key])
        parameters = [weights[n] for n in _ordered(weights, param_names)]
        loss, num_examples, metrics = client_fn(context).evaluate(parameters, config_of(message))
        record = MetricRecord({**_numeric(metrics), "loss": float(loss), "num-examples": int(num_examples)})
        return Message(RecordDict({"metrics": record}), reply_to=message)

    return app


def organization_from_context(context: Context) -> Organization:
    """An :class:`Organization` from the SuperNode's node config (``flower-supernode --node-config``):

    ``fedledger-api-url``, ``fedledger-key-file`` (0x key or encrypted keystore; the password from
    ``FEDLEDGER_CLIENT_KEYSTORE_PASSWORD``), and optionally ``fedledger-rpc-url``, ``fedledger-deployments``
    (a deployments file the organization trusts; default: the API's) and ``fedledger-model-signer``
    (required off the dev chain).
    """
    node = context.node_config
    missing = [k for k in ("fedledger-api-url", "fedledger-key-file") if not node.get(k)]
    if missing:
        raise ConfigurationError(
            f"node config lacks {missing}: start the SuperNode with --node-config "
            "\"fedledger-api-url='https://...' fedledger-key-file='/path/key'\""
        )

    def optional(key: str) -> str | None:
        value = node.get(key)
        return str(value) if value else None

    return Organization(
        Wallet.load(str(node["fedledger-key-file"])),
        str(node["fedledger-api-url"]),
        rpc_url=optional("fedledger-rpc-url"),
        deployments=optional("fedledger-deployments"),
        trusted_model_signer=optional("fedledger-model-signer"),
        poll_interval=0.5,
    )


# ------------------------------------------------------------------------------------------ platform
class FedLedgerPlatform:
    """A fedledger deployment as ``FedLedgerStrategy``'s :class:`~fedledger.flower.RoundPlatform`.

    ``operator`` must be one of the API's round-runner addresses (``FEDLEDGER_ROUND_RUNNER_ADDRESSES``, least
    privilege: it opens rounds) or operator addresses (needed only when the platform has no model yet: it then
    uploads the genesis model). Models are read back through an :class:`Organization` on the
    operator's wallet, so they are verified exactly as organizations verify them (hash, trusted model
    signer, on-chain record).
    """

    def __init__(
        self,
        api_url: str,
        operator: Wallet,
        *,
        rpc_url: str | None = None,
        deployments: Path | str | None = None,
        trusted_model_signer: str | None = None,
        round_seconds: int = 300,
        timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        if round_seconds < 1:
            raise ConfigurationError(f"round_seconds must be positive, got {round_seconds}")
        self.api = FedLedgerApi(api_url, wallet=operator)
        self.reader = Organization(
            operator,
            api_url,
            rpc_url=rpc_url,
            deployments=deployments,
            trusted_model_signer=trusted_model_signer,
            poll_interval=poll_interval,
        )
        self.round_seconds = round_seconds
        # The platform extends a short round up to its governed number of times; wait for all of them.
        self.timeout = timeout if timeout is not None else 4.0 * round_seconds + 300.0

    def close(self) -> None:
        """Close the operator's API session and the model reader's connections."""
        self.api.close()
        self.reader.close()

    def _ensure_model(self, initial: Weights) -> None:
        try:
            current = self.api.current_model()
        except (ConflictError, NotFoundError):
            with contextlib.suppress(ConflictError):  # another operator uploaded one meanwhile
                self.api.upload_genesis(encode_weights(initial))
            current = self.api.current_model()
        spec = {name: list(shape) for name, shape in current.spec.items()}
        wanted = {name: list(value.shape) for name, value in initial.items()}
        if initial and spec != wanted:
            raise ConfigurationError(
                f"the platform's model has tensors {spec}, the ServerApp's initial arrays {wanted}: "
                "a Flower federation can only join a deployment training the same model"
            )

    def open_round(self, initial: Weights, quorum: int, cohort: list[str] | None = None) -> OpenedRound:
        """Open a round as the operator; ``initial`` becomes the genesis model if the platform has none.
        ``cohort``: the invited wallets (only they submit; the round closes once all of them have)."""
        self._ensure_model(initial)
        opened = self.api.open_round(self.round_seconds, max(1, quorum), cohort)
        return OpenedRound(opened.id, opened.model_version)

    def blocked(self, addresses: list[str]) -> set[str]:
        """Wallets among ``addresses`` the platform no longer accepts updates from (lower-cased)."""
        wanted = {a.lower() for a in addresses}
        return {
            p.address.lower()
            for p in self.api.participants()
            if p.address.lower() in wanted and p.status != "active"
        }

    def finish_round(self, round_id: int) -> PlatformOutcome:
        """Wait until the round closes; return its outcome, the model verified as organizations verify it."""
        final = self.reader.wait_for_round(round_id, timeout=self.timeout)
        history = self.api.round_history(limit=1000)
        stats = next((r for r in history if r.id == round_id), None)
        aggregation = stats.aggregation if stats is not None else None
        contributions = self.api.contributions(round_id=round_id)
        status = final.status.upper()
        weights = self.reader.pull_model().weights if status == "POSTED" else None
        return PlatformOutcome(
            round_id=round_id,
            status=status,
            weights=weights,
            holdout_accuracy=aggregation.holdout_accuracy if aggregation else None,
            holdout_loss=aggregation.holdout_loss_after if aggregation else None,
            failure_reason=final.failure_reason,
            contributions=contributions,
        )
