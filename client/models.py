"""Pulling the federation's models, and verifying them before any training.

A model is trained on only when: the SHA-256 of the downloaded weights equals the advertised hash; the
EIP-712 ``Model(version, hash)`` signature recovers to the *trusted* model signer (configured by the
organization, never learned from the server; on a dev chain, Hardhat account #2 by default); the
signature's domain is this deployment; and a model produced by a round matches
``ContributionLedger.modelHashOf(round)`` on-chain. Any failure raises
:class:`~client.errors.ModelVerificationError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from web3 import Web3

from client.chain import DEV_CHAIN_IDS, OrganizationChain, chain_errors, dev_model_signer
from client.errors import ConfigurationError, ModelVerificationError
from client.training import Weights
from fedledger.api.client import FedLedgerApi
from fedledger.api.schemas import ModelOut
from fedledger.crypto.addresses import is_valid_address
from fedledger.crypto.eip712 import recover_model_signer
from fedledger.crypto.errors import CryptoError
from fedledger.payload import UpdateFormatError, decode_weights

_ZERO_HASH = b"\x00" * 32


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose hash, signer and (if produced by a round) on-chain record were checked."""

    version: int
    weights: Weights = field(repr=False)
    weights_hash: str  # hex SHA-256, no 0x
    signer: str
    produced_by_round: int | None
    onchain_verified: bool
    metadata: ModelOut = field(repr=False)

    @property
    def spec(self) -> dict[str, tuple[int, ...]]:
        """``{tensor name: shape}``: what picks the built-in trainer."""
        return {name: tuple(value.shape) for name, value in self.weights.items()}


class ModelVerifier:
    """Downloads model versions from the API and checks them against the trusted signer and the chain."""

    def __init__(self, api: FedLedgerApi, chain: OrganizationChain, trusted_model_signer: str | None) -> None:
        if trusted_model_signer is not None and not is_valid_address(trusted_model_signer):
            raise ConfigurationError(
                f"the trusted model signer must be a 0x address, got {trusted_model_signer!r}"
            )
        self.api = api
        self.chain = chain
        self._trusted = Web3.to_checksum_address(trusted_model_signer) if trusted_model_signer else None

    @property
    def trusted_model_signer(self) -> str:
        """The configured model signer; on a dev chain (by the RPC's own chain id) Hardhat account #2."""
        if self._trusted is not None:
            return self._trusted
        if self.chain.chain_id in DEV_CHAIN_IDS:
            return dev_model_signer()
        raise ConfigurationError(
            "no trusted model signer is configured: set the address whose signature models must carry "
            "(trusted_model_signer=, --model-signer or FEDLEDGER_CLIENT_MODEL_SIGNER); the server's own claim "
            "is not trusted"
        )

    def pull(self, version: int | None = None) -> VerifiedModel:
        """Download and verify a model version (the active one by default)."""
        meta = self.api.current_model() if version is None else self.api.model(version)
        number = meta.version
        advertised = meta.weights_hash.lower().removeprefix("0x")
        signature = meta.signature
        produced_by = meta.produced_by_round
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
        signer = self._check_signature(number, meta, signature, digest)
        try:
            weights = decode_weights(raw)
        except UpdateFormatError as exc:
            raise ModelVerificationError(f"model v{number}: {exc}") from exc
        for name, value in weights.items():
            if value.dtype != np.float32 or not np.isfinite(value).all():
                raise ModelVerificationError(f"model v{number}: tensor {name!r} is not finite float32")
        round_id = produced_by
        if round_id is not None:
            self._check_onchain(number, round_id, digest)
        return VerifiedModel(number, weights, digest, signer, round_id, round_id is not None, meta)

    def _check_signature(self, number: int, meta: ModelOut, signature: str, digest: str) -> str:
        deployments = self.chain.deployments
        ledger = deployments.addresses["ContributionLedger"]
        if meta.chain_id != deployments.chain_id or meta.verifying_contract.lower() != ledger.lower():
            raise ModelVerificationError(
                f"model v{number} is signed for chain {meta.chain_id} / ledger {meta.verifying_contract}, "
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
        return signer

    def _check_onchain(self, number: int, round_id: int, digest: str) -> None:
        with chain_errors(f"reading round {round_id}'s model hash from the ContributionLedger"):
            recorded = self.chain.reader.model_hash_of(round_id)
        if recorded == _ZERO_HASH:
            raise ModelVerificationError(
                f"model v{number} claims to come from round {round_id}, which is not recorded on-chain (yet)"
            )
        if recorded.hex() != digest:
            raise ModelVerificationError(
                f"model v{number}: the chain records sha256:{recorded.hex()} for round {round_id}, "
                f"the weights hash to sha256:{digest}: not training on them"
            )
