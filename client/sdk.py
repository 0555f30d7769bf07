"""The organization SDK: everything one organization does to take part in fedledger rounds.

    from client import Organization, Wallet, load_csv

    org = Organization(Wallet.load(), "https://fl.example.org", rpc_url="https://rpc.example.org",
                       trusted_model_signer="0x...")
    org.setup(org_name="Hospital A")            # sign in, register, stake on-chain if not enrolled
    result = org.participate(load_csv("local.csv"), wait=True)
    org.claim_rewards()

:class:`Organization` is a thin facade; each job is a part of its own, and each part says what it checks
and why:

- :mod:`client.chain`: deployments checked against the RPC, chain reads, the wallet's transactions, the
  stake (:class:`~client.chain.OrganizationChain`);
- :mod:`client.membership`: sign-in, registration, may this organization submit;
- :mod:`client.models`: models verified before any training (hash, trusted signer, deployment, on-chain
  record; :class:`~client.errors.ModelVerificationError` otherwise);
- :mod:`client.local_update`: delta = local - global, optional local DP
  (:class:`~client.training.LocalDP`);
- :mod:`client.sealing`: optional top-k/float16 compression, sealed for the server's current key,
  EIP-712 signed, submitted with retries that resend *the same envelope bytes* (same receipt);
- :mod:`client.spool`: with ``spool_dir`` the envelope is written to disk before the first attempt, so a
  client that crashes before the receipt arrives resends the same bytes after a restart;
- :mod:`client.rounds` and :mod:`client.participation`: the open round, one contribution, waiting, and the
  loop over every round;
- :mod:`client.rewards`: rewards with their Merkle proofs checked against the chain, then claimed once
  the round's dispute window is over (:class:`~client.errors.RewardNotClaimableYetError` before), never
  for a round whose rewards were cancelled in it (:class:`~client.errors.RewardsCancelledError`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from web3 import Web3

from client.chain import (
    DEFAULT_RPC_URL,
    ENV_RPC_URL,
    EnrollmentResult,
    OrganizationChain,
    dev_model_signer,
)
from client.errors import ConfigurationError
from client.local_update import LocalTraining, builtin_trainer
from client.membership import Membership
from client.models import ModelVerifier, VerifiedModel
from client.participation import EventCallback, Participation, Submission
from client.rewards import ClaimResult, Reward, RewardClaims
from client.rounds import open_round
from client.sealing import Chunking, PreparedUpdate, UpdateSealer
from client.spool import Spool
from client.training import EpochCallback, LocalDP, NumpyTrainer, TrainFn
from client.wallet import Wallet
from fedledger.api.client import FedLedgerApi, ProgressCallback
from fedledger.api.schemas import ParticipantOut, ParticipantStatusOut, ReceiptOut, RoundOut, TokenResponse
from fedledger.chain.deployments import Deployments
from fedledger.payload import NO_COMPRESSION, Compression

__all__ = [
    "ClaimResult",
    "EnrollmentResult",
    "LocalTraining",
    "Organization",
    "PreparedUpdate",
    "Reward",
    "Submission",
    "VerifiedModel",
    "dev_model_signer",
]


class Organization:
    """One organization (one wallet) taking part in fedledger through the API and the chain.

    The methods delegate to the parts (``chain``, ``membership``, ``models``, ``sealer``, ``spool``,
    ``claims``, ``participation``), which can also be used on their own.
    """

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
        chunking: Chunking | None = None,
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
        self.chain = OrganizationChain(
            wallet,
            rpc_url or os.environ.get(ENV_RPC_URL) or DEFAULT_RPC_URL,
            w3=w3,
            deployments=deployments,
            fetch_deployments=self.api.deployments,
        )
        self.models = ModelVerifier(self.api, self.chain, trusted_model_signer)
        self.membership = Membership(
            self.api,
            self.chain,
            org_name=org_name,
            poll_interval=poll_interval,
            enrollment_sync_timeout=enrollment_sync_timeout,
            sleep=sleep,
        )
        self.sealer = UpdateSealer(self.api, self.chain, wallet, compression, chunking)
        self.spool = Spool(spool_dir, wallet.address, self.api.base_url)
        self.claims = RewardClaims(self.api, self.chain)
        self.participation = Participation(
            self.api,
            self.membership,
            self.models,
            self.sealer,
            self.spool,
            self.claims,
            dp=dp,
            trainer_options=dict(trainer_options or {}),
            poll_interval=poll_interval,
            sleep=sleep,
        )

    @property
    def address(self) -> str:
        """The organization's wallet address."""
        return self.wallet.address

    @property
    def submitted_rounds(self) -> set[int]:
        """Rounds this instance has a receipt for."""
        return self.participation.submitted_rounds

    def close(self) -> None:
        """Close the API client's connections (if it made them)."""
        self.api.close()

    def __enter__(self) -> Organization:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- chain
    @property
    def w3(self) -> Web3:
        """The RPC connection."""
        return self.chain.w3

    @property
    def deployments(self) -> Deployments:
        """The contracts, checked against the RPC's chain (loaded once)."""
        return self.chain.deployments

    @property
    def trusted_model_signer(self) -> str:
        """The address whose signature models must carry."""
        return self.models.trusted_model_signer

    def contract(self, name: str) -> Any:
        """A web3 contract of the deployments."""
        return self.chain.contract(name)

    def chain_status(self) -> dict[str, Any]:
        """Registry status, stake, balances and the minimum stake, read from the chain now."""
        return self.chain.status()

    def ensure_enrolled(self, stake_wei: int | None = None) -> EnrollmentResult:
        """Stake in ``ParticipantRegistry`` unless already active (idempotent)."""
        return self.chain.ensure_enrolled(stake_wei)

    # -------------------------------------------------------------------------------------- API
    def sign_in(self) -> TokenResponse:
        """Sign in with the wallet (SIWE); returns the session."""
        return self.api.login()

    def default_org_name(self) -> str:
        """The name registered when none is given."""
        return self.membership.default_org_name()

    def register(self, org_name: str | None = None) -> ParticipantOut:
        """Register (or rename) the organization; idempotent."""
        return self.membership.register(org_name)

    def ensure_registered(self, org_name: str | None = None) -> ParticipantStatusOut:
        """The participant record, registering first if there is none."""
        return self.membership.ensure_registered(org_name)

    def setup(
        self, org_name: str | None = None, stake_wei: int | None = None, *, enroll: bool = True
    ) -> ParticipantStatusOut:
        """Sign in, stake on-chain if needed, register; returns the participant record."""
        return self.membership.setup(org_name, stake_wei, enroll=enroll)

    def status(self) -> dict[str, Any]:
        """Registration, chain, current round and model (chain failures reported, not raised)."""
        return self.membership.status()

    def check_may_submit(
        self, *, auto_enroll: bool = False, stake_wei: int | None = None
    ) -> ParticipantStatusOut:
        """Registered and enrolled, or a typed error that says what to do."""
        return self.membership.check_may_submit(auto_enroll=auto_enroll, stake_wei=stake_wei)

    def open_round(self) -> RoundOut:
        """The round accepting updates now, or :class:`~client.errors.NoOpenRoundError`."""
        return open_round(self.api)

    # -------------------------------------------------------------------------------------- models
    def pull_model(self, version: int | None = None) -> VerifiedModel:
        """Download and verify a model version (the active one by default)."""
        return self.models.pull(version)

    def trainer_for(self, model: VerifiedModel, progress: EpochCallback | None = None) -> NumpyTrainer:
        """The built-in trainer for the model's spec, with this organization's hyperparameters."""
        return builtin_trainer(model.spec, self.participation.trainer_options, progress)

    def train(
        self, model: VerifiedModel, data: Any, trainer: TrainFn | None = None, **options: Any
    ) -> LocalTraining:
        """Train locally from the verified global weights (see :meth:`Participation.train`)."""
        return self.participation.train(model, data, trainer, **options)

    # -------------------------------------------------------------------------------------- updates
    def prepare_update(
        self, round_id: int, model_version: int, delta: Mapping[str, np.ndarray], num_samples: int
    ) -> PreparedUpdate:
        """Compress, seal for the server's current key, and sign with EIP-712."""
        return self.sealer.prepare(round_id, model_version, delta, num_samples)

    def submit(self, prepared: PreparedUpdate, *, progress: ProgressCallback | None = None) -> ReceiptOut:
        """Submit (retrying with the same bytes) and check that the receipt is for this envelope."""
        return self.sealer.submit(prepared, progress=progress)

    def participate(self, data: Any, **options: Any) -> Submission:
        """One full contribution to the open round (see :meth:`Participation.participate`)."""
        return self.participation.participate(data, **options)

    def wait_for_round(
        self, round_id: int, *, timeout: float = 900.0, poll_interval: float | None = None
    ) -> RoundOut:
        """Poll the round until it is POSTED or FAILED."""
        return self.participation.wait_for_round(round_id, timeout=timeout, poll_interval=poll_interval)

    def run(
        self,
        data: Any,
        *,
        stop: threading.Event | None = None,
        on_event: EventCallback | None = None,
        **options: Any,
    ) -> list[Submission]:
        """Take part in every round until ``stop`` is set (see :meth:`Participation.run`)."""
        return self.participation.run(data, stop=stop, on_event=on_event, **options)

    # -------------------------------------------------------------------------------------- rewards
    def rewards(self) -> list[Reward]:
        """Every reward the API lists for this organization."""
        return self.claims.rewards()

    def claim_reward(self, reward: Reward) -> ClaimResult:
        """Claim one reward on-chain, after checking its proof against the on-chain root.

        :class:`~client.errors.RewardNotClaimableYetError` while the round's dispute window runs (it says
        when the reward becomes claimable), :class:`~client.errors.RewardsCancelledError` when the round's
        rewards were cancelled in that window (they never become claimable); nothing is sent then.
        """
        return self.claims.claim(reward)

    def claim_rewards(self, round_ids: set[int] | None = None) -> list[ClaimResult]:
        """Claim every unclaimed reward (or those of ``round_ids``); rounds still in their dispute window
        are skipped and reported with status ``not_claimable_yet`` and when they become claimable, rounds
        whose rewards were cancelled with status ``cancelled``; the others are claimed all the same."""
        return self.claims.claim_all(round_ids)
