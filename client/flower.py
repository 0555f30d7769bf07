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
Flower server only decides when rounds start and who is asked; it holds an operator login (open rounds,
upload the genesis model) and nothing else. It never sees an update in the clear (updates are sealed for
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
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from client.api import FedLedgerApi
from client.errors import (
    ConfigurationError,
    ConflictError,
    NoOpenRoundError,
    NotFoundError,
    TrainingError,
)
from client.sdk import Organization, Submission
from client.wallet import Wallet
from fedledger.flower import (
    ADDRESS_KEY,
    MODEL_VERSION_KEY,
    PAYLOAD_HASH_KEY,
    RECEIPT_KEY,
    REPLY_RECORD,
    ROUND_KEY,
    OpenedRound,
    PlatformOutcome,
    Weights,
    to_record,
    to_weights,
)
from fedledger.payload import encode_weights

ClientFn = Callable[[Context], NumPyClient]
OrganizationFn = Callable[[Context], Organization]
_METRIC_TYPES = (int, float)


# ------------------------------------------------------------------------------------------ bridge
class _Fit:
    """One ``NumPyClient.fit`` as a fedledger trainer (``TrainFn``): named tensors in, named tensors out.

    It is also the "data" handed to the SDK: its length is the ``num_examples`` the fit reported, so the
    update is signed with the sample count the organization's own code gives.
    """

    def __init__(self, client: NumPyClient, names: Sequence[str] | None, config: Mapping[str, Any]) -> None:
        self.client, self.names, self.config = client, names, dict(config)
        self.num_examples: int | None = None
        self.metrics: dict[str, Any] = {}

    def __call__(self, weights: Weights, data: Any, rng: np.random.Generator) -> Weights:
        names = list(self.names) if self.names is not None else list(weights)
        if sorted(names) != sorted(weights):
            raise TrainingError(
                f"param_names {names} do not name the model's tensors {sorted(weights)}; pass the order your "
                "NumPyClient's parameter lists use"
            )
        result = self.client.fit([weights[n] for n in names], dict(self.config))
        try:
            parameters, num_examples, metrics = result
        except (TypeError, ValueError):
            raise TrainingError("NumPyClient.fit must return (parameters, num_examples, metrics)") from None
        if len(parameters) != len(names):
            raise TrainingError(f"fit returned {len(parameters)} arrays, the model has {len(names)} tensors")
        self.num_examples, self.metrics = int(num_examples), dict(metrics or {})
        return {n: np.asarray(p, dtype=np.float32) for n, p in zip(names, parameters, strict=True)}

    def __len__(self) -> int:
        if self.num_examples is None:
            raise TrainingError("the sample count is known only after NumPyClient.fit has run")
        return self.num_examples


class FlowerBridge:
    """A Flower ``NumPyClient`` taking part in fedledger rounds through an :class:`Organization`.

    ``param_names`` is the order of the tensors in the client's parameter lists (the model's tensor names);
    by default the order the platform's model lists them in.
    """

    def __init__(
        self,
        client: NumPyClient,
        organization: Organization,
        *,
        param_names: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        auto_enroll: bool = False,
    ) -> None:
        self.client, self.organization = client, organization
        self.param_names = list(param_names) if param_names is not None else None
        self.config = dict(config or {})
        self.auto_enroll = auto_enroll
        self.last_fit: _Fit | None = None

    def _fit(self, extra: Mapping[str, Any] | None = None) -> _Fit:
        self.last_fit = _Fit(self.client, self.param_names, {**self.config, **(extra or {})})
        return self.last_fit

    def participate(
        self, round_id: int | None = None, *, config: Mapping[str, Any] | None = None, wait: bool = False
    ) -> Submission:
        """Train with ``fit`` on the verified model of the open round and submit; ``round_id`` pins the round
        (:class:`NoOpenRoundError` if another one is open)."""
        org = self.organization
        if round_id is not None:
            org.check_may_submit(auto_enroll=self.auto_enroll)
            open_id = int(org.open_round()["id"])
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


def fedledger_client_app(
    client_fn: ClientFn,
    organization_fn: OrganizationFn | None = None,
    *,
    param_names: Sequence[str] | None = None,
    auto_enroll: bool = False,
    arrays_key: str = "arrays",
    config_key: str = "config",
) -> ClientApp:
    """A Flower ``ClientApp`` around the organization's ``NumPyClient`` (see the module docstring).

    ``organization_fn(context)`` builds the organization (wallet, API, chain) when a fedledger round asks
    for it; :func:`organization_from_context` reads it from the SuperNode's node config.
    """
    app = ClientApp()

    def ordered(record: ArrayRecord) -> tuple[list[str], list[np.ndarray]]:
        weights = to_weights(record)
        names = list(param_names) if param_names is not None else list(weights)
        if sorted(names) != sorted(weights):
            raise TrainingError(f"param_names {names} do not name the arrays sent {sorted(weights)}")
        return names, [weights[n] for n in names]

    @app.train()
    def train(message: Message, context: Context) -> Message:
        config = dict(message.content.config_records.get(config_key, ConfigRecord()))
        client = client_fn(context)
        if ROUND_KEY in config:
            if organization_fn is None:
                raise ConfigurationError(
                    "a fedledger round asked for this node, but no organization_fn is set"
                )
            organization = organization_fn(context)
            try:
                bridge = FlowerBridge(
                    client, organization, param_names=param_names, config=config, auto_enroll=auto_enroll
                )
                submission = bridge.participate(int(config[ROUND_KEY]))
            finally:
                organization.close()
            fit = bridge.last_fit
            reply = ConfigRecord(
                {
                    ROUND_KEY: submission.round_id,
                    MODEL_VERSION_KEY: submission.prepared.model_version,
                    ADDRESS_KEY: organization.address,
                    RECEIPT_KEY: str(submission.receipt.get("receipt_id", "")),
                    PAYLOAD_HASH_KEY: submission.prepared.payload_hash,
                }
            )
            metrics = {
                **_numeric(fit.metrics if fit else {}),
                "num-examples": submission.prepared.num_samples,
            }
            content = RecordDict({REPLY_RECORD: reply, "metrics": MetricRecord(metrics)})
            return Message(content, reply_to=message)
        names, parameters = ordered(message.content.array_records[arrays_key])
        new, num_examples, metrics = client.fit(parameters, config)
        arrays = to_record({n: np.asarray(p) for n, p in zip(names, new, strict=True)})
        content = RecordDict(
            {
                arrays_key: arrays,
                "metrics": MetricRecord({**_numeric(metrics), "num-examples": int(num_examples)}),
            }
        )
        return Message(content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        config = dict(message.content.config_records.get(config_key, ConfigRecord()))
        _, parameters = ordered(message.content.array_records[arrays_key])
        loss, num_examples, metrics = client_fn(context).evaluate(parameters, config)
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

    ``operator`` must be one of the API's operator addresses (``FEDLEDGER_OPERATOR_ADDRESSES``): it opens
    rounds and uploads the genesis model. Models are read back through an :class:`Organization` on the
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
        self.api.close()
        self.reader.close()

    def _ensure_model(self, initial: Weights) -> None:
        try:
            current = self.api.current_model()
        except (ConflictError, NotFoundError):
            with contextlib.suppress(ConflictError):  # another operator uploaded one meanwhile
                self.api.request(
                    "POST",
                    "/v1/models",
                    body=encode_weights(initial),
                    headers={"Content-Type": "application/octet-stream"},
                )
            current = self.api.current_model()
        spec = {name: list(shape) for name, shape in (current.get("spec") or {}).items()}
        wanted = {name: list(value.shape) for name, value in initial.items()}
        if initial and spec != wanted:
            raise ConfigurationError(
                f"the platform's model has tensors {spec}, the ServerApp's initial arrays {wanted}: "
                "a Flower federation can only join a deployment training the same model"
            )

    def open_round(self, initial: Weights, quorum: int) -> OpenedRound:
        self._ensure_model(initial)
        opened = self.api.request(
            "POST", "/v1/rounds", json={"duration_seconds": self.round_seconds, "quorum": max(1, quorum)}
        ).json()
        return OpenedRound(int(opened["id"]), int(opened["model_version"]))

    def finish_round(self, round_id: int) -> PlatformOutcome:
        final = self.reader.wait_for_round(round_id, timeout=self.timeout)
        history = self.api.get_json("/v1/stats/rounds?limit=1000")
        stats = next((r for r in history if int(r["id"]) == round_id), {})
        aggregation = stats.get("aggregation") or {}
        contributions = self.api.get_json(f"/v1/stats/contributions?round_id={round_id}")
        status = str(final.get("status", "")).upper()
        weights = self.reader.pull_model().weights if status == "POSTED" else None
        return PlatformOutcome(
            round_id=round_id,
            status=status,
            weights=weights,
            holdout_accuracy=aggregation.get("holdout_accuracy"),
            holdout_loss=aggregation.get("holdout_loss_after"),
            failure_reason=final.get("failure_reason"),
            contributions=list(contributions),
        )
