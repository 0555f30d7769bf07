"""What fedledger's Flower server side (``aggregator.flower``) and organization side (``client.flower``) agree
on: the keys of the messages between them, the platform a strategy points at, and Flower ``ArrayRecord`` <->
named float32 tensors. Needs the ``flower`` extra (``pip install 'fedledger[flower]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedledger.api.schemas import ContributionOut

try:
    from flwr.app import Array, ArrayRecord
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("fedledger's Flower support needs Flower: pip install 'fedledger[flower]'") from exc

Weights = dict[str, np.ndarray]

# The config a platform-mode strategy sends with each train message.
ROUND_KEY = "fedledger-round"
MODEL_VERSION_KEY = "fedledger-model-version"
# The ConfigRecord a bridge client replies with (its receipt from the platform).
REPLY_RECORD = "fedledger"
ADDRESS_KEY = "fedledger-address"
RECEIPT_KEY = "fedledger-receipt"
PAYLOAD_HASH_KEY = "fedledger-payload-hash"
# EIP-191 signature, by the wallet the reply names, of :func:`reply_statement`: without it a node could name
# another organization's wallet (and be counted, scored and reported as that organization).
SIGNATURE_KEY = "fedledger-signature"


def reply_statement(round_id: int, node_id: int, address: str, receipt_id: str) -> str:
    """The text a bridge client's wallet signs: binds its wallet to this Flower node, round and receipt."""
    return (
        f"fedledger Flower reply\nround: {int(round_id)}\nnode: {int(node_id)}\n"
        f"wallet: {address}\nreceipt: {receipt_id}"
    )


def reply_signer_matches(
    round_id: int, node_id: int, address: str, receipt_id: str, signature: object
) -> str | None:
    """None when ``signature`` is the named wallet's over :func:`reply_statement`; else why not."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not isinstance(signature, str) or not signature:
        return "the reply carries no signature by the wallet it names"
    try:
        signer = Account.recover_message(
            encode_defunct(text=reply_statement(round_id, node_id, address, receipt_id)), signature=signature
        )
    except Exception:  # noqa: BLE001 - eth_account raises several types for a malformed signature
        return "the reply's signature is malformed"
    if signer.lower() != address.lower():
        return f"the reply names wallet {address} but is signed by {signer}"
    return None


def to_weights(record: ArrayRecord) -> Weights:
    """Named float32 tensors, in the record's order."""
    return {name: np.asarray(array.numpy(), dtype=np.float32) for name, array in record.items()}


def to_record(weights: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named tensors as a Flower ``ArrayRecord`` in the mapping's order: the inverse of :func:`to_weights`."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in weights.items()})


@dataclass(frozen=True)
class OpenedRound:
    """A round the platform opened for a strategy, and the model version its clients must train on."""

    round_id: int
    model_version: int


@dataclass(frozen=True)
class PlatformOutcome:
    """A fedledger round after its close: the verified model it produced (None if it failed) and what the
    platform recorded for each participant (its scored contributions, as the dashboard reads them)."""

    round_id: int
    status: str  # POSTED | FAILED
    weights: Weights | None
    holdout_accuracy: float | None = None
    holdout_loss: float | None = None
    failure_reason: str | None = None
    contributions: list[ContributionOut] = field(default_factory=list)


class RoundPlatform(Protocol):
    """A fedledger deployment as a Flower strategy sees it (``client.flower.FedLedgerPlatform``)."""

    def open_round(self, initial: Weights, quorum: int, cohort: list[str] | None = None) -> OpenedRound:
        """Open a round on the platform's active model; ``initial`` becomes the genesis model if there is none.
        With ``cohort`` (wallets), only they may submit and the round closes once all of them have."""
        ...

    def finish_round(self, round_id: int) -> PlatformOutcome:
        """Wait until the round is recorded on-chain (or failed) and return its verified outcome."""
        ...

    def blocked(self, addresses: list[str]) -> set[str]:
        """Which of these wallets may not submit now (slashed, suspended, exited), lower-cased."""
        ...
