"""The organization's side of the chain: deployments it can trust, reads, and its own transactions.

Deployments (contract addresses) come from a file the organization trusts or, by default, from the API;
either way their chain id must be the RPC's and the token contract must exist there. Pin a file in
production: the stake approval goes to the registry address it names. Reads go through the platform's one
:class:`~fedledger.chain.reader.ChainReader` (on this client's connection); transactions are signed with
the wallet's key. Every web3 or RPC failure surfaces as a :class:`~client.errors.ChainError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from eth_account import Account
from web3 import Web3
from web3.exceptions import TimeExhausted, Web3Exception

from client.errors import (
    ChainError,
    ConfigurationError,
    InsufficientFundsError,
    TransactionFailedError,
)
from client.wallet import Wallet
from fedledger.chain.deployments import Deployments, DeploymentsError
from fedledger.chain.params import ParameterMismatch
from fedledger.chain.reader import ChainReader, RegistryStatus
from fedledger.chain.tx import TransactionReverted, send_transaction
from fedledger.devkeys import MODEL_SIGNER_INDEX, dev_private_key

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
ENV_RPC_URL = "FEDLEDGER_CHAIN_RPC_URL"
DEV_CHAIN_IDS = frozenset({31337, 1337})


@dataclass(frozen=True)
class EnrollmentResult:
    """The outcome of :meth:`OrganizationChain.ensure_enrolled`: the stake, and the transactions sent."""

    address: str
    already_active: bool
    stake_wei: int
    tx_hashes: tuple[str, ...] = ()


def dev_model_signer() -> str:
    """The dev chain's model signer: Hardhat account #2 (the API's default on the dev chain)."""
    return str(Account.from_key(dev_private_key(MODEL_SIGNER_INDEX)).address)


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


class OrganizationChain:
    """One wallet's connection to the deployed contracts: checked deployments, reads, signed sends.

    ``deployments``: a :class:`Deployments`, a path to a deployments file, or None to ask
    ``fetch_deployments`` (the API's copy) the first time they are needed.
    """

    def __init__(
        self,
        wallet: Wallet,
        rpc_url: str,
        *,
        w3: Web3 | None = None,
        deployments: Deployments | Path | str | None = None,
        fetch_deployments: Callable[[], Deployments] | None = None,
    ) -> None:
        self.wallet = wallet
        self.rpc_url = rpc_url
        self._w3 = w3
        self._source = deployments
        self._fetch = fetch_deployments
        self._deployments: Deployments | None = None
        self._reader: ChainReader | None = None

    @property
    def w3(self) -> Web3:
        """The RPC connection (made on first use)."""
        if self._w3 is None:
            self._w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        return self._w3

    @property
    def deployments(self) -> Deployments:
        """The contracts, checked against the RPC's chain (loaded once)."""
        if self._deployments is None:
            deployments = self._load_deployments()
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

    def _load_deployments(self) -> Deployments:
        source = self._source
        if isinstance(source, Deployments):
            return source
        if source is not None:
            try:
                return Deployments.load(Path(source))
            except DeploymentsError as exc:
                raise ChainError(str(exc)) from None
        if self._fetch is None:
            raise ConfigurationError("no deployments: pass a deployments file (or an API to ask)")
        try:
            return self._fetch()
        except DeploymentsError as exc:
            raise ChainError(str(exc)) from None

    @property
    def chain_id(self) -> int:
        """The chain id of the checked deployments."""
        return self.deployments.chain_id

    @property
    def reader(self) -> ChainReader:
        """The platform's chain reader on this connection; reads are never cached (this client's own
        stake must show at once)."""
        if self._reader is None:
            self._reader = ChainReader(self.w3, self.deployments, enrollment_ttl=0.0)
        return self._reader

    def contract(self, name: str) -> Any:
        """A web3 contract of the deployments, on this connection."""
        return self.deployments.contract(self.w3, name)

    def send(self, call: Any, what: str) -> str:
        """Sign and send a contract call with the wallet's key, wait for it; returns the 0x transaction hash."""
        with chain_errors(what):
            receipt = send_transaction(self.w3, call, self.wallet.private_key)
        return "0x" + bytes(receipt["transactionHash"]).hex()

    def status(self) -> dict[str, Any]:
        """Registry status, stake, balances and the minimum stake, read from the chain now."""
        address = self.wallet.address
        reader = self.reader
        with chain_errors("reading the chain"):
            enrollment = reader.enrollment(address)
            return {
                "status": enrollment.status.name,
                "active": enrollment.status == RegistryStatus.active,
                "stake_wei": enrollment.stake,
                "token_balance_wei": reader.balance_of(address),
                "eth_balance_wei": reader.ether_balance(address),
                "min_stake_wei": reader.params().integer("min_stake"),
                "chain_id": self.chain_id,
            }

    def resume_if_inactive(self) -> str | None:
        """Send ``ParticipantRegistry.resume()`` when the chain shows this wallet suspended for inactivity;
        returns the transaction hash, or None when there was nothing to resume.

        ``suspendInactive`` is open to anyone once the activity evidence is older than the governed timeout
        (e.g. after a posting backlog, or an organization that sat out a week): the organization may always
        return by itself, and waiting for a person to notice would cost it every round meanwhile."""
        with chain_errors("reading the registry"):
            record = self.reader.participant(self.wallet.address)
        if record.status != RegistryStatus.suspended or not record.inactive:
            return None
        return self.send(
            self.reader.registry.functions.resume(), "resuming after a suspension for inactivity"
        )

    def ensure_enrolled(self, stake_wei: int | None = None) -> EnrollmentResult:
        """Stake in ``ParticipantRegistry`` unless already active: approve the registry, then ``enroll``.

        ``stake_wei`` defaults to the governed minimum stake. Idempotent: an active participant is left alone.
        """
        address = self.wallet.address
        status = self.status()
        if status["active"]:
            return EnrollmentResult(address, True, status["stake_wei"])
        if status["status"] not in ("none", "exited") or (
            status["status"] == "exited" and status["stake_wei"]
        ):
            raise ChainError(
                f"{address} is {status['status']} in the ParticipantRegistry and cannot enroll again"
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
                f"{address} holds {status['token_balance_wei']} token wei; staking needs {amount}"
            )
        registry, token = self.reader.registry, self.reader.token
        hashes: list[str] = []
        with chain_errors("reading the allowance"):
            allowance = self.reader.allowance(address, registry.address)
        if allowance < amount:
            hashes.append(self.send(token.functions.approve(registry.address, amount), "approving the stake"))
        hashes.append(self.send(registry.functions.enroll(amount), "enrolling in the ParticipantRegistry"))
        return EnrollmentResult(address, False, amount, tuple(hashes))
