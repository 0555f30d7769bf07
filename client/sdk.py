"""The organization SDK: everything one organization does to take part in fedledger rounds.

    from client import Organization, Wallet, load_csv

    org = Organization(Wallet.load(), "https://fl.example.org", rpc_url="https://rpc.example.org",
                       trusted_model_signer="0x...")
    org.setup(org_name="Hospital A")            # sign in, register, stake on-chain if not enrolled
    result = org.participate(load_csv("local.csv"), wait=True)
    org.claim_rewards()

What each step checks, and why:

- **Deployments** (contract addresses) come from a file the organization trusts (``deployments=``) or,
  by default, from the API; either way their chain id must be the RPC's and the token contract must
  exist there. Pin a file in production: the stake approval goes to the registry address it names.
- **Models** are verified before any training: SHA-256 of the downloaded weights equals the advertised
  hash, the EIP-712 ``Model(version, hash)`` signature recovers to the *trusted* model signer (configured
  by the organization, never learned from the server; on a dev chain, Hardhat account #2 by default), the
  signature's domain is this deployment, and a model produced by a round matches
  ``ContributionLedger.modelHashOf(round)`` on-chain. Any failure raises
  :class:`~client.errors.ModelVerificationError`.
- **Updates**: delta = local - global, optional local DP (:class:`~client.training.LocalDP`), optional
  top-k/float16 compression, sealed for the server's current key, EIP-712 signed, then submitted with
  retries that resend *the same envelope bytes* (same receipt). With ``spool_dir`` the envelope is written
  to disk before the first attempt, so a client that crashes before the receipt arrives resends the same
  bytes after a restart instead of training again (a different payload would be refused with 409).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import TimeExhausted, Web3Exception

from client.api import FedLedgerApi, ProgressCallback, parse_utc
from client.errors import (
    ApiError,
    ApiUnreachableError,
    ChainError,
    ClientError,
    ConfigurationError,
    ConflictError,
    InsufficientFundsError,
    InvalidRequestError,
    ModelVerificationError,
    NoOpenRoundError,
    NotEnrolledError,
    NotFoundError,
    NotRegisteredError,
    ParticipantBlockedError,
    RateLimitedError,
    RewardProofError,
    RoundClosedError,
    RoundTimeoutError,
    ServerError,
    TrainingError,
    TransactionFailedError,
)
from client.training import (
    DPReport,
    EpochCallback,
    LocalDP,
    Metrics,
    NumpyTrainer,
    TrainFn,
    Weights,
    compute_delta,
    global_norm,
    train_locally,
    trainer_for_spec,
)
from client.wallet import Wallet
from fedledger.chain.deployments import Deployments, DeploymentsError
from fedledger.chain.merkle import leaf_hash
from fedledger.chain.merkle import verify as verify_proof
from fedledger.chain.params import ParameterMismatch, read_params
from fedledger.chain.tx import TransactionReverted, send_transaction
from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.eip712 import recover_model_signer
from fedledger.crypto.envelope import seal
from fedledger.crypto.errors import CryptoError
from fedledger.crypto.keys import key_id_of
from fedledger.devkeys import MODEL_SIGNER_INDEX, dev_private_key
from fedledger.payload import NO_COMPRESSION, Compression, UpdateFormatError, decode_weights, encode_update

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
ENV_RPC_URL = "FEDLEDGER_CHAIN_RPC_URL"
DEV_CHAIN_IDS = frozenset({31337, 1337})
FINAL_ROUND_STATUSES = frozenset({"POSTED", "FAILED"})
# Registry status enum (ParticipantRegistry.Status).
_STATUS_NAMES = ("none", "active", "suspended", "slashed", "exited")
_ZERO_HASH = b"\x00" * 32

EventCallback = Callable[[str, dict[str, Any]], None]


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class VerifiedModel:
    """A model whose hash, signer and (if produced by a round) on-chain record were checked."""

    version: int
    weights: Weights = field(repr=False)
    weights_hash: str  # hex SHA-256, no 0x
    signer: str
    produced_by_round: int | None
    onchain_verified: bool
    metadata: dict[str, Any] = field(repr=False)

    @property
    def spec(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(value.shape) for name, value in self.weights.items()}


@dataclass(frozen=True)
class LocalTraining:
    weights: Weights = field(repr=False)
    delta: Weights = field(repr=False)
    num_samples: int
    delta_norm: float
    before: Metrics | None
    after: Metrics | None
    dp: DPReport | None
    seconds: float


@dataclass(frozen=True)
class PreparedUpdate:
    """A sealed, signed update: resend exactly these bytes until a receipt arrives."""

    round_id: int
    model_version: int
    num_samples: int
    envelope: bytes = field(repr=False)
    signature: str
    payload_hash: str  # 0x hex SHA-256 of the envelope
    key_id: str
    plaintext_bytes: int

    @property
    def size(self) -> int:
        return len(self.envelope)


@dataclass(frozen=True)
class Submission:
    round_id: int
    receipt: dict[str, Any]
    prepared: PreparedUpdate
    training: LocalTraining | None  # None when a spooled envelope was resent
    timings: dict[str, float]
    final_round: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (what the CLI prints with --json)."""
        out: dict[str, Any] = {
            "round_id": self.round_id,
            "receipt_id": self.receipt.get("receipt_id"),
            "replayed": self.receipt.get("replayed"),
            "payload_hash": self.prepared.payload_hash,
            "model_version": self.prepared.model_version,
            "num_samples": self.prepared.num_samples,
            "envelope_bytes": self.prepared.size,
            "plaintext_bytes": self.prepared.plaintext_bytes,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.training is not None:
            out["delta_norm"] = self.training.delta_norm
            out["metrics_before"] = self.training.before.as_dict() if self.training.before else None
            out["metrics_after"] = self.training.after.as_dict() if self.training.after else None
            out["dp"] = asdict(self.training.dp) if self.training.dp else None
        if self.final_round is not None:
            out["round_status"] = self.final_round.get("status")
        return out


@dataclass(frozen=True)
class EnrollmentResult:
    address: str
    already_active: bool
    stake_wei: int
    tx_hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reward:
    round_id: int
    amount_wei: int
    proof: tuple[str, ...]
    claimed: bool

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Reward:
        try:
            return cls(
                int(raw["round_id"]),
                int(raw["amount_wei"]),
                tuple(str(p) for p in raw.get("proof", [])),
                bool(raw.get("claimed", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "malformed_response", f"a reward entry is malformed: {exc!r}") from exc


@dataclass(frozen=True)
class ClaimResult:
    round_id: int
    amount_wei: int
    status: str  # "claimed" | "already_claimed"
    tx_hash: str | None = None


# ------------------------------------------------------------------------------------------ helpers
def deployments_from_dict(raw: Mapping[str, Any]) -> Deployments:
    """A :class:`Deployments` from the JSON document (e.g. ``GET /v1/chain/deployments``)."""
    try:
        return Deployments.from_dict(raw, source="the API's deployments")
    except DeploymentsError as exc:
        raise ChainError(str(exc)) from None


def dev_model_signer() -> str:
    """The dev chain's model signer: Hardhat account #2 (the API's default on the dev chain)."""
    return Account.from_key(dev_private_key(MODEL_SIGNER_INDEX)).address


@contextmanager
def chain_errors(what: str) -> Iterator[None]:
    """Turn web3 / RPC failures into :class:`ChainError` (reverts into :class:`TransactionFailedError`)."""
    try:
        yield
    except TransactionReverted as exc:
        raise TransactionFailedError(f"{what}: {exc}", error=exc.error) from exc
    except ParameterMismatch as exc:
        raise ChainError(f"{what}: {exc}") from exc
    except TimeExhausted as exc:
        raise ChainError(f"{what}: the transaction was not mined in time: {exc}") from exc
    except (Web3Exception, requests.RequestException, OSError) as exc:
        text = str(exc)
        if "insufficient funds" in text.lower():
            raise InsufficientFundsError(f"{what}: the wallet has too little ether for gas") from exc
        raise ChainError(f"{what}: the chain RPC failed: {type(exc).__name__}: {text[:300]}") from exc


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------ the SDK
class Organization:
    """One organization (one wallet) taking part in fedledger through the API and the chain."""

    def __init__(
        self,
        wallet: Wallet,
        api: FedLedgerApi | str | None = None,
        *,
        http: httpx.Client | None = None,
        rpc_url: str | None = None,
        w3: Web3 | None = None,
        deployments: Deployments | Path | str | None = None,
        trusted_model_signer: str | None = None,
        org_name: str | None = None,
        compression: Compression = NO_COMPRESSION,
        dp: LocalDP | None = None,
        trainer_options: Mapping[str, Any] | None = None,
        spool_dir: Path | str | None = None,
        poll_interval: float = 2.0,
        enrollment_sync_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.wallet = wallet
        if isinstance(api, FedLedgerApi):
            self.api = api
            if api.wallet is None:
                api.wallet = wallet
            elif api.wallet.address != wallet.address:
                raise ConfigurationError("the API client is signed in with another wallet")
        else:
            self.api = FedLedgerApi(api, wallet=wallet, http=http)
        if trusted_model_signer is not None and not is_valid_address(trusted_model_signer):
            raise ConfigurationError(
                f"the trusted model signer must be a 0x address, got {trusted_model_signer!r}"
            )
        self._trusted_signer = (
            Web3.to_checksum_address(trusted_model_signer) if trusted_model_signer else None
        )
        self.rpc_url = rpc_url or os.environ.get(ENV_RPC_URL) or DEFAULT_RPC_URL
        self._w3 = w3
        self._deployments_source = deployments
        self._deployments: Deployments | None = None
        self.org_name = org_name
        self.compression = compression
        self.dp = dp
        self.trainer_options = dict(trainer_options or {})
        self.spool_dir = Path(spool_dir).expanduser() if spool_dir is not None else None
        self.poll_interval = poll_interval
        self.enrollment_sync_timeout = enrollment_sync_timeout
        self._sleep = sleep
        # Rounds this instance has a receipt for (the spool remembers them across restarts).
        self.submitted_rounds: set[int] = set()

    @property
    def address(self) -> str:
        return self.wallet.address

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Organization:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- chain
    @property
    def w3(self) -> Web3:
        if self._w3 is None:
            self._w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        return self._w3

    @property
    def deployments(self) -> Deployments:
        """The contracts, checked against the RPC's chain (loaded once)."""
        if self._deployments is None:
            source = self._deployments_source
            if isinstance(source, Deployments):
                deployments = source
            elif source is not None:
                try:
                    deployments = Deployments.load(Path(source))
                except DeploymentsError as exc:
                    raise ChainError(str(exc)) from None
            else:
                deployments = deployments_from_dict(self.api.deployments())
            with chain_errors(f"checking the deployments against the RPC at {self.rpc_url}"):
                try:
                    deployments.check_chain(self.w3)
                except DeploymentsError as exc:
                    raise ChainError(str(exc)) from None
            if self.wallet.is_dev_key and deployments.chain_id not in DEV_CHAIN_IDS:
                raise ConfigurationError(
                    f"the wallet is a public Hardhat development key; never use it on chain {deployments.chain_id}"
                )
            self._deployments = deployments
        return self._deployments

    def contract(self, name: str) -> Any:
        return self.deployments.contract(self.w3, name)

    @property
    def trusted_model_signer(self) -> str:
        """The configured model signer; on a dev chain (by the RPC's own chain id) Hardhat account #2."""
        if self._trusted_signer is not None:
            return self._trusted_signer
        if self.deployments.chain_id in DEV_CHAIN_IDS:
            return dev_model_signer()
        raise ConfigurationError(
            "no trusted model signer is configured: set the address whose signature models must carry "
            "(trusted_model_signer=, --model-signer or FEDLEDGER_CLIENT_MODEL_SIGNER); the server's own claim "
            "is not trusted"
        )

    def _send(self, call: Any, what: str) -> str:
        with chain_errors(what):
            receipt = send_transaction(self.w3, call, self.wallet.private_key)
        return "0x" + bytes(receipt["transactionHash"]).hex()

    def chain_status(self) -> dict[str, Any]:
        """Registry status, stake, balances and the minimum stake, read from the chain now."""
        registry, token = self.contract("ParticipantRegistry"), self.contract("RewardToken")
        with chain_errors("reading the chain"):
            record = registry.functions.participantOf(self.address).call()
            fields = dict(zip(self._participant_fields(registry), record, strict=True))
            params = read_params(self.contract("ProtocolParameters"))
            status = int(fields["status"])
            return {
                "status": _STATUS_NAMES[status] if status < len(_STATUS_NAMES) else str(status),
                "active": bool(registry.functions.isActive(self.address).call()),
                "stake_wei": int(fields["stake"]),
                "token_balance_wei": int(token.functions.balanceOf(self.address).call()),
                "eth_balance_wei": int(self.w3.eth.get_balance(Web3.to_checksum_address(self.address))),
                "min_stake_wei": int(params.min_stake),
                "chain_id": self.deployments.chain_id,
            }

    @staticmethod
    def _participant_fields(registry: Any) -> list[str]:
        for entry in registry.abi:
            if entry.get("type") == "function" and entry.get("name") == "participantOf":
                return [c["name"] for c in entry["outputs"][0]["components"]]
        raise ChainError("ParticipantRegistry ABI lacks participantOf")

    def ensure_enrolled(self, stake_wei: int | None = None) -> EnrollmentResult:
        """Stake in ``ParticipantRegistry`` unless already active: approve the registry, then ``enroll``.

        ``stake_wei`` defaults to the governed minimum stake. Idempotent: an active participant is left alone.
        """
        registry, token = self.contract("ParticipantRegistry"), self.contract("RewardToken")
        status = self.chain_status()
        if status["active"]:
            return EnrollmentResult(self.address, True, status["stake_wei"])
        if status["status"] not in ("none", "exited") or (
            status["status"] == "exited" and status["stake_wei"]
        ):
            raise ChainError(
                f"{self.address} is {status['status']} in the ParticipantRegistry and cannot enroll again"
                + (
                    " until its stake is withdrawn"
                    if status["status"] == "exited"
                    else "; ask the federation's governance"
                )
            )
        minimum = status["min_stake_wei"]
        amount = minimum if stake_wei is None else int(stake_wei)
        if amount < minimum:
            raise ConfigurationError(f"a stake of {amount} wei is below the minimum stake of {minimum} wei")
        if status["token_balance_wei"] < amount:
            raise InsufficientFundsError(
                f"{self.address} holds {status['token_balance_wei']} token wei; staking needs {amount}"
            )
        hashes: list[str] = []
        with chain_errors("reading the allowance"):
            allowance = int(token.functions.allowance(self.address, registry.address).call())
        if allowance < amount:
            hashes.append(
                self._send(token.functions.approve(registry.address, amount), "approving the stake")
            )
        hashes.append(self._send(registry.functions.enroll(amount), "enrolling in the ParticipantRegistry"))
        return EnrollmentResult(self.address, False, amount, tuple(hashes))

    # -------------------------------------------------------------------------------------- API
    def sign_in(self) -> dict[str, Any]:
        return self.api.login()

    def default_org_name(self) -> str:
        return self.org_name or f"org-{self.address[2:10].lower()}"

    def register(self, org_name: str | None = None) -> dict[str, Any]:
        """Register (or rename) the organization; idempotent."""
        return self.api.register(org_name or self.default_org_name())

    def ensure_registered(self, org_name: str | None = None) -> dict[str, Any]:
        """The participant record, registering first if there is none (an existing name is kept)."""
        try:
            return self.api.me()
        except NotRegisteredError:
            self.register(org_name)
            return self.api.me()

    def setup(
        self, org_name: str | None = None, stake_wei: int | None = None, *, enroll: bool = True
    ) -> dict[str, Any]:
        """Sign in, stake on-chain if needed, register; returns ``GET /v1/participants/me``.

        The stake comes first: the API may cache an enrollment read for a while, so asking it about this
        wallet before staking could leave it answering "not enrolled" for that while after the stake.
        """
        self.sign_in()
        if enroll:
            self.ensure_enrolled(stake_wei)
        me = self.ensure_registered(org_name)
        if enroll and me.get("chain_status") in (None, "none"):
            me = self._wait_for_server_enrollment(me)
        return me

    def status(self) -> dict[str, Any]:
        """Everything about this organization: registration, chain, current round and model. An unreachable
        chain is reported in ``chain.error`` rather than raised."""
        out: dict[str, Any] = {"address": self.address, "api": self.api.base_url}
        try:
            out["participant"] = self.api.me()
            out["registered"] = True
        except NotRegisteredError:
            out["participant"], out["registered"] = None, False
        try:
            out["chain"] = self.chain_status()
        except (ChainError, ConfigurationError, ServerError) as exc:
            out["chain"] = {"error": str(exc)}
        try:
            out["round"] = self.api.current_round()
        except NotFoundError:
            out["round"] = None
        try:
            model = self.api.current_model()
            out["model"] = {
                k: model.get(k) for k in ("version", "weights_hash", "produced_by_round", "status")
            }
        except (ConflictError, NotFoundError):
            out["model"] = None
        return out

    # -------------------------------------------------------------------------------------- models
    def pull_model(self, version: int | None = None) -> VerifiedModel:
        """Download and verify a model version (the active one by default)."""
        meta = self.api.current_model() if version is None else self.api.model(version)
        try:
            number = int(meta["version"])
            advertised = str(meta["weights_hash"]).lower().removeprefix("0x")
            signature = str(meta["signature"])
            produced_by = meta.get("produced_by_round")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelVerificationError(f"the model metadata is malformed: {exc!r}") from exc
        if version is not None and number != version:
            raise ModelVerificationError(
                f"asked for model version {version}, the server described version {number}"
            )
        raw = self.api.model_weights(number)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != advertised:
            raise ModelVerificationError(
                f"model v{number}: the downloaded weights hash to sha256:{digest}, the server advertised "
                f"sha256:{advertised}; the weights were altered in transit or at rest: not training on them"
            )
        deployments = self.deployments
        ledger = deployments.addresses["ContributionLedger"]
        if (
            meta.get("chain_id") != deployments.chain_id
            or str(meta.get("verifying_contract", "")).lower() != ledger.lower()
        ):
            raise ModelVerificationError(
                f"model v{number} is signed for chain {meta.get('chain_id')} / ledger {meta.get('verifying_contract')}, "
                f"not this deployment (chain {deployments.chain_id}, ledger {ledger})"
            )
        trusted = self.trusted_model_signer
        try:
            signer = recover_model_signer(
                signature,
                chain_id=deployments.chain_id,
                verifying_contract=ledger,
                version=number,
                model_hash=bytes.fromhex(digest),
            )
        except CryptoError as exc:
            raise ModelVerificationError(f"model v{number}: the signature is invalid: {exc}") from exc
        if signer != trusted:
            raise ModelVerificationError(
                f"model v{number} was signed by {signer}, not by the trusted model signer {trusted}: not training on it"
            )
        try:
            weights = decode_weights(raw)
        except UpdateFormatError as exc:
            raise ModelVerificationError(f"model v{number}: {exc}") from exc
        for name, value in weights.items():
            if value.dtype != np.float32 or not np.isfinite(value).all():
                raise ModelVerificationError(f"model v{number}: tensor {name!r} is not finite float32")
        onchain = False
        if produced_by is not None:
            with chain_errors(f"reading round {produced_by}'s model hash from the ContributionLedger"):
                recorded = bytes(
                    self.contract("ContributionLedger").functions.modelHashOf(int(produced_by)).call()
                )
            if recorded == _ZERO_HASH:
                raise ModelVerificationError(
                    f"model v{number} claims to come from round {produced_by}, which is not recorded on-chain (yet)"
                )
            if recorded.hex() != digest:
                raise ModelVerificationError(
                    f"model v{number}: the chain records sha256:{recorded.hex()} for round {produced_by}, "
                    f"the weights hash to sha256:{digest}: not training on them"
                )
            onchain = True
        return VerifiedModel(
            number,
            weights,
            digest,
            signer,
            int(produced_by) if produced_by is not None else None,
            onchain,
            dict(meta),
        )

    # -------------------------------------------------------------------------------------- training
    def trainer_for(self, model: VerifiedModel, progress: EpochCallback | None = None) -> NumpyTrainer:
        return trainer_for_spec(model.spec, **self.trainer_options).with_progress(progress)

    def train(
        self,
        model: VerifiedModel,
        data: Any,
        trainer: TrainFn | None = None,
        *,
        seed: int | np.random.Generator | None = None,
        num_samples: int | None = None,
        eval_data: Any = None,
        progress: EpochCallback | None = None,
    ) -> LocalTraining:
        """Train locally from the verified global weights; returns the (optionally privatized) delta."""
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        train_fn: TrainFn = trainer if trainer is not None else self.trainer_for(model, progress)
        evaluate = getattr(train_fn, "evaluate", None)
        check = eval_data if eval_data is not None else data
        before = evaluate(model.weights, check) if callable(evaluate) else None
        local = train_locally(model.weights, data, train_fn, rng)
        after = evaluate(local, check) if callable(evaluate) else None
        delta = compute_delta(local, model.weights)
        report = None
        if self.dp is not None:
            delta, report = self.dp.privatize(delta, rng)
        if num_samples is None:
            try:
                num_samples = len(data)
            except TypeError:
                raise TrainingError("pass num_samples= for data without a length") from None
        if num_samples < 1:
            raise TrainingError("an update needs at least one training sample")
        return LocalTraining(
            local,
            delta,
            int(num_samples),
            global_norm(delta),
            before,
            after,
            report,
            time.perf_counter() - started,
        )

    # -------------------------------------------------------------------------------------- updates
    def prepare_update(
        self, round_id: int, model_version: int, delta: Mapping[str, np.ndarray], num_samples: int
    ) -> PreparedUpdate:
        """Compress, seal for the server's current key, and sign with EIP-712."""
        try:
            payload = encode_update(delta, self.compression)
        except UpdateFormatError as exc:
            raise TrainingError(f"the update cannot be encoded: {exc}") from exc
        key = self.api.current_key()
        try:
            pem = str(key["public_key_pem"]).encode()
            key_id = key_id_of(pem)
        except (KeyError, CryptoError) as exc:
            raise ApiError(200, "malformed_response", f"the server's public key is unusable: {exc}") from exc
        if key.get("key_id") != key_id:
            raise ApiError(
                200,
                "malformed_response",
                f"the server's key id {key.get('key_id')} does not match its key ({key_id})",
            )
        try:
            envelope = seal(
                payload,
                pem,
                round_id=round_id,
                model_version=model_version,
                participant=self.address,
                num_samples=num_samples,
            )
        except CryptoError as exc:
            raise ClientError(f"the update cannot be sealed: {exc}") from exc
        digest = hashlib.sha256(envelope).digest()
        deployments = self.deployments
        signature = self.wallet.sign_update(
            chain_id=deployments.chain_id,
            verifying_contract=deployments.addresses["ContributionLedger"],
            round_id=round_id,
            model_version=model_version,
            payload_hash=digest,
            num_samples=num_samples,
        )
        return PreparedUpdate(
            round_id,
            model_version,
            num_samples,
            envelope,
            signature,
            "0x" + digest.hex(),
            key_id,
            len(payload),
        )

    def submit(self, prepared: PreparedUpdate, *, progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Submit (retrying with the same bytes) and check that the receipt is for this envelope."""
        receipt = self.api.submit_update(
            prepared.round_id, prepared.envelope, prepared.signature, progress=progress
        )
        if (
            str(receipt.get("payload_hash", "")).lower() != prepared.payload_hash
            or receipt.get("round_id") != prepared.round_id
        ):
            raise ApiError(
                202,
                "receipt_mismatch",
                f"the receipt {receipt.get('receipt_id')} is for {receipt.get('payload_hash')} in round "
                f"{receipt.get('round_id')}, not this update ({prepared.payload_hash}, round {prepared.round_id})",
            )
        return receipt

    # spool: a sealed envelope survives a crash until its receipt arrives
    def _spool_paths(self, round_id: int) -> tuple[Path, Path, Path] | None:
        if self.spool_dir is None:
            return None
        base = (
            self.spool_dir
            / self.address
            / self.api.base_url.replace("://", "_").replace("/", "_").replace(":", "_")
        )
        return (
            base / f"round-{round_id}.envelope",
            base / f"round-{round_id}.json",
            base / f"round-{round_id}.receipt.json",
        )

    def _spool_save(self, prepared: PreparedUpdate) -> None:
        paths = self._spool_paths(prepared.round_id)
        if paths is None:
            return
        envelope_path, meta_path, _ = paths
        envelope_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = {k: v for k, v in asdict(prepared).items() if k != "envelope"}
        envelope_path.write_bytes(prepared.envelope)
        meta_path.write_text(json.dumps(meta))

    def _spool_load(self, round_id: int) -> tuple[PreparedUpdate | None, dict[str, Any] | None]:
        paths = self._spool_paths(round_id)
        if paths is None:
            return None, None
        envelope_path, meta_path, receipt_path = paths
        receipt = json.loads(receipt_path.read_text()) if receipt_path.exists() else None
        if not (envelope_path.exists() and meta_path.exists()):
            return None, receipt
        meta = json.loads(meta_path.read_text())
        prepared = PreparedUpdate(envelope=envelope_path.read_bytes(), **meta)
        if "0x" + hashlib.sha256(prepared.envelope).hexdigest() != prepared.payload_hash:
            return None, receipt
        return prepared, receipt

    def _spool_receipt(self, round_id: int, receipt: Mapping[str, Any]) -> None:
        paths = self._spool_paths(round_id)
        if paths is not None:
            paths[2].write_text(json.dumps(dict(receipt)))

    def open_round(self) -> dict[str, Any]:
        """The round accepting updates now, or :class:`NoOpenRoundError`."""
        try:
            round_ = self.api.current_round()
        except NotFoundError as exc:
            raise NoOpenRoundError("no round has been opened yet; wait for the operator to open one") from exc
        deadline = parse_utc(round_.get("deadline"))
        if str(round_.get("status", "")).upper() != "OPEN":
            raise NoOpenRoundError(
                f"round {round_.get('id')} is {round_.get('status')}; no round accepts updates now"
            )
        if deadline is not None and deadline <= _utcnow():
            raise NoOpenRoundError(f"round {round_.get('id')}'s deadline {round_.get('deadline')} has passed")
        return round_

    def check_may_submit(self, *, auto_enroll: bool = False, stake_wei: int | None = None) -> dict[str, Any]:
        """Registered and enrolled, or a typed error that says what to do (or enroll, with ``auto_enroll``)."""
        if auto_enroll:
            self.ensure_enrolled(stake_wei)
        me = self.ensure_registered()
        if me.get("may_submit"):
            return me
        chain_status = me.get("chain_status")
        if chain_status in (None, "none"):
            me = self._wait_for_server_enrollment(me)
            if me.get("may_submit"):
                return me
            chain_status = me.get("chain_status")
        reason = me.get("reason") or "the server says this participant may not submit"
        if chain_status in (None, "none"):
            raise NotEnrolledError(
                403, "not_enrolled", f"{reason}; run `fedledger client enroll` (or auto_enroll=True)"
            )
        code = f"participant_{chain_status if chain_status != 'active' else me.get('status')}"
        raise ParticipantBlockedError(403, code, reason)

    def _wait_for_server_enrollment(self, me: dict[str, Any]) -> dict[str, Any]:
        """The API says "not enrolled": if the chain (read by this client) says active, the API's view is
        stale (it caches enrollment reads); poll it until it agrees, up to ``enrollment_sync_timeout``."""
        if not self.chain_status()["active"]:
            return me
        deadline = time.monotonic() + self.enrollment_sync_timeout
        while me.get("chain_status") in (None, "none") and time.monotonic() < deadline:
            self._sleep(min(1.0, max(self.poll_interval, 0.05)))
            me = self.api.me()
        return me

    def participate(
        self,
        data: Any,
        *,
        trainer: TrainFn | None = None,
        seed: int | None = None,
        num_samples: int | None = None,
        eval_data: Any = None,
        wait: bool = False,
        timeout: float = 900.0,
        auto_enroll: bool = False,
        train_progress: EpochCallback | None = None,
        upload_progress: ProgressCallback | None = None,
    ) -> Submission:
        """One full contribution to the open round: verify the model, train, seal, sign, submit."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        self.check_may_submit(auto_enroll=auto_enroll)
        round_ = self.open_round()
        round_id, model_version = int(round_["id"]), int(round_["model_version"])
        spooled, spooled_receipt = self._spool_load(round_id)
        training: LocalTraining | None = None
        if spooled is not None and spooled_receipt is not None:
            self.submitted_rounds.add(round_id)
            return Submission(
                round_id, spooled_receipt, spooled, None, {"total": time.perf_counter() - started}
            )
        if spooled is not None:
            prepared = spooled
        else:
            mark = time.perf_counter()
            model = self.pull_model(model_version)
            timings["pull_and_verify"] = time.perf_counter() - mark
            training = self.train(
                model,
                data,
                trainer,
                seed=seed,
                num_samples=num_samples,
                eval_data=eval_data,
                progress=train_progress,
            )
            timings["train"] = training.seconds
            mark = time.perf_counter()
            prepared = self.prepare_update(round_id, model_version, training.delta, training.num_samples)
            timings["seal_and_sign"] = time.perf_counter() - mark
            self._spool_save(prepared)
        mark = time.perf_counter()
        try:
            receipt = self.submit(prepared, progress=upload_progress)
        except InvalidRequestError as exc:
            # The server rotated its key and retired the one this envelope was sealed to: nothing was
            # accepted, so sealing the same update again for the current key is safe.
            if exc.code not in ("unknown_key", "retired_key") or training is None:
                raise
            prepared = self.prepare_update(round_id, model_version, training.delta, training.num_samples)
            self._spool_save(prepared)
            receipt = self.submit(prepared, progress=upload_progress)
        timings["submit"] = time.perf_counter() - mark
        self._spool_receipt(round_id, receipt)
        self.submitted_rounds.add(round_id)
        timings["total"] = time.perf_counter() - started
        final = self.wait_for_round(round_id, timeout=timeout) if wait else None
        if final is not None:
            timings["wait"] = time.perf_counter() - started - timings["total"]
        return Submission(round_id, receipt, prepared, training, timings, final)

    def wait_for_round(
        self, round_id: int, *, timeout: float = 900.0, poll_interval: float | None = None
    ) -> dict[str, Any]:
        """Poll the round until it is POSTED or FAILED; :class:`RoundTimeoutError` after ``timeout`` seconds.
        Transient API failures while waiting are tolerated until the timeout."""
        interval = self.poll_interval if poll_interval is None else poll_interval
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            try:
                last = self.api.round(round_id)
                if str(last.get("status", "")).upper() in FINAL_ROUND_STATUSES:
                    return last
            except (ApiUnreachableError, ServerError, RateLimitedError):
                pass
            if time.monotonic() + interval > deadline:
                status = last.get("status") if last else "unknown"
                raise RoundTimeoutError(f"round {round_id} is still {status} after {timeout:.0f} s")
            self._sleep(interval)

    # -------------------------------------------------------------------------------------- rewards
    def rewards(self) -> list[Reward]:
        return [Reward.from_api(raw) for raw in self.api.rewards(self.address)]

    def claim_reward(self, reward: Reward) -> ClaimResult:
        """Claim one reward on-chain, after checking its proof against the root the distributor holds."""
        distributor = self.contract("RewardDistributor")
        with chain_errors(f"reading round {reward.round_id}'s rewards"):
            if distributor.functions.claimed(reward.round_id, self.address).call():
                return ClaimResult(reward.round_id, reward.amount_wei, "already_claimed")
            root = bytes(distributor.functions.roundRewards(reward.round_id).call()[0])
        try:
            proof = [bytes.fromhex(p.removeprefix("0x")) for p in reward.proof]
        except ValueError as exc:
            raise RewardProofError(f"round {reward.round_id}: the proof is not hex: {exc}") from None
        if root == _ZERO_HASH:
            raise RewardProofError(f"round {reward.round_id} has no rewards root on-chain (not posted yet)")
        if not verify_proof(root, leaf_hash(reward.round_id, self.address, reward.amount_wei), proof):
            raise RewardProofError(
                f"round {reward.round_id}: the proof for {reward.amount_wei} wei does not verify against the "
                f"on-chain root 0x{root.hex()}; the claim would revert"
            )
        tx = self._send(
            distributor.functions.claim(reward.round_id, self.address, reward.amount_wei, proof),
            f"claiming round {reward.round_id}'s reward",
        )
        return ClaimResult(reward.round_id, reward.amount_wei, "claimed", tx)

    def claim_rewards(self, round_ids: set[int] | None = None) -> list[ClaimResult]:
        """Claim every unclaimed reward (or those of ``round_ids``)."""
        results = []
        for reward in self.rewards():
            if round_ids is not None and reward.round_id not in round_ids:
                continue
            if reward.claimed:
                results.append(ClaimResult(reward.round_id, reward.amount_wei, "already_claimed"))
                continue
            results.append(self.claim_reward(reward))
        return results

    # -------------------------------------------------------------------------------------- loop
    def run(
        self,
        data: Any,
        *,
        trainer: TrainFn | None = None,
        max_rounds: int | None = None,
        stop: threading.Event | None = None,
        claim: bool = True,
        auto_enroll: bool = False,
        seed: int | None = None,
        on_event: EventCallback | None = None,
        train_progress: EpochCallback | None = None,
        upload_progress: ProgressCallback | None = None,
    ) -> list[Submission]:
        """Take part in every round until ``stop`` is set (or ``max_rounds`` submissions were made).

        Expected failures of one round (closed, already submitted, unreachable API) are reported through
        ``on_event`` and the loop goes on; configuration problems and failed model verification stop it.
        """
        stop = stop or threading.Event()
        emit = on_event or (lambda kind, payload: None)
        done: set[int] = set(self.submitted_rounds)
        submissions: list[Submission] = []
        claimed_after: set[int] = set()
        failures = 0
        while not stop.is_set():
            try:
                round_ = self.api.current_round()
                round_id = int(round_["id"])
                status = str(round_.get("status", "")).upper()
                if status == "OPEN" and round_id not in done:
                    emit("round_open", {"round_id": round_id, "deadline": round_.get("deadline")})
                    try:
                        submission = self.participate(
                            data,
                            trainer=trainer,
                            auto_enroll=auto_enroll,
                            seed=None if seed is None else seed + round_id,
                            train_progress=train_progress,
                            upload_progress=upload_progress,
                        )
                    except (RoundClosedError, NoOpenRoundError) as exc:
                        emit("round_missed", {"round_id": round_id, "reason": str(exc)})
                    except ConflictError as exc:
                        emit("already_submitted", {"round_id": round_id, "reason": str(exc)})
                    else:
                        submissions.append(submission)
                        emit("submitted", submission.summary())
                    done.add(round_id)
                    if max_rounds is not None and len(submissions) >= max_rounds:
                        return submissions
                elif status == "POSTED" and claim and round_id in done and round_id not in claimed_after:
                    claimed_after.add(round_id)
                    try:
                        for result in self.claim_rewards():
                            if result.status == "claimed":
                                emit("claimed", asdict(result))
                    except (NotFoundError, ChainError) as exc:
                        emit("claim_failed", {"round_id": round_id, "reason": str(exc)})
                failures = 0
            except NotFoundError:
                pass  # no round yet
            except (ApiUnreachableError, ServerError, RateLimitedError) as exc:
                failures += 1
                emit("api_unavailable", {"reason": str(exc), "consecutive": failures})
            stop.wait(min(self.poll_interval * (2 ** min(failures, 5)), 300.0))
        return submissions
