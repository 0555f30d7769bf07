"""Live data for the dashboard: the fedledger API over HTTP and the contracts over JSON-RPC.

Nothing here renders anything and nothing here invents data: every figure comes from the API or from the
chain, and an empty answer stays empty (the views show an empty state). The views call these classes once
per script run; the API and the node are local and fast, so nothing is cached beyond one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from eth_typing import HexStr
from eth_utils import to_checksum_address
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TransactionNotFound

from fedledger.api.client import NO_RETRY, FedLedgerApi
from fedledger.api.errors import ApiError, ClientError
from fedledger.api.schemas import (
    ContributionOut,
    ModelOut,
    NonceResponse,
    OverviewOut,
    ParticipantOut,
    ParticipantStatusOut,
    RewardOut,
    RoundOut,
    RoundStatsOut,
    SecAggGroupsOut,
    SecAggOut,
    TokenFiguresOut,
    TokenResponse,
)
from fedledger.chain.deployments import Deployments, DeploymentsError
from fedledger.chain.params import WAD, ProtocolParams
from fedledger.chain.reader import ChainReader, RegistryStatus, RewardStatus, TokenFigures
from fedledger.chain.tx import decode_custom_error
from fedledger.config import Settings


class DashboardError(RuntimeError):
    """Something the dashboard needs is unreachable or answered unexpectedly; the message says what.

    The API's refusals are the typed client's errors (:class:`fedledger.api.errors.ApiError`, with
    ``status``, ``code`` and ``detail``; :class:`~fedledger.api.errors.ApiUnreachableError` when it did not answer):
    one error type for every caller of the API. :data:`DASHBOARD_ERRORS` catches both kinds.
    """


class ChainUnavailable(DashboardError):
    """The chain's RPC endpoint did not answer, or serves another chain than the deployments'."""


# The API's own errors carry a code; its framework's 404 for an unknown route has none (fedledger.api's
# error_from_response then names it after the status).
NO_ROUTE = "http_404"

DASHBOARD_ERRORS: tuple[type[Exception], ...] = (DashboardError, ClientError)


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads from: the settings' ``api_url`` and ``chain_rpc_url``, and how long it
    waits for one API answer (``dashboard_api_timeout``)."""

    api_url: str
    chain_rpc_url: str
    api_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DashboardConfig:
        # A fresh Settings per script run (not the cached one): the environment is read each time.
        settings = settings or Settings()
        return cls(
            api_url=settings.api_url.rstrip("/"),
            chain_rpc_url=settings.chain_rpc_url,
            api_timeout=settings.dashboard_api_timeout,
        )


# --------------------------------------------------------------------------------------------- API


class Api:
    """The fedledger API, as the dashboard uses it (server side: the browser never talks to the API).

    A thin wrapper over the one typed client (:class:`~fedledger.api.client.FedLedgerApi`, never retrying: a
    page must answer at once) that turns the answers a page shows as an empty state into None: no round or
    model yet (404/409), the chain unreachable (503), a wallet with no organization."""

    def __init__(
        self, base_url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._api = FedLedgerApi(http=http, retry=NO_RETRY)
        self._http = http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public reads ------------------------------------------------------------------------------
    def overview(self) -> OverviewOut:
        return self._api.overview()

    def rounds(self, limit: int = 1000) -> list[RoundStatsOut]:
        return self._api.round_history(limit=limit)

    def contributions(
        self, round_id: int | None = None, address: str | None = None, limit: int = 5000
    ) -> list[ContributionOut]:
        return self._api.contributions(round_id=round_id, address=address, limit=limit)

    def participants(self) -> list[ParticipantOut]:
        return self._api.participants()

    def token(self) -> TokenFiguresOut | None:
        """Token figures, or None while the API cannot reach the chain."""
        try:
            return self._api.token()
        except ApiError as exc:
            if exc.status == 503:
                return None
            raise

    def current_round(self) -> RoundOut | None:
        """The round in progress (or the latest one); None before the first round."""
        try:
            return self._api.current_round()
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def round(self, round_id: int) -> RoundOut | None:
        """A round's public record (its parameter snapshot says its mode); None for an unknown round."""
        try:
            return self._api.round(round_id)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def secagg_groups(self, round_id: int) -> SecAggGroupsOut | None:
        """A secure round's groups and their outcomes (public); None for a round in the clear mode, an
        unknown round, or an API without the route."""
        try:
            return self._api.secagg_groups(round_id)
        except ApiError as exc:
            if exc.status in (404, 409):
                return None
            raise

    def current_model(self) -> ModelOut | None:
        """The active model's metadata; None before the genesis model is uploaded."""
        try:
            return self._api.current_model()
        except ApiError as exc:
            if exc.status in (404, 409):
                return None
            raise

    def deployments(self) -> Deployments:
        return self._api.deployments()

    # --- sign-in ----------------------------------------------------------------------------------
    def nonce(self, address: str, domain: str | None = None) -> NonceResponse:
        """The server's EIP-4361 challenge (``message`` is what the wallet signs with personal_sign).

        ``domain`` is the host[:port] of the page asking the wallet (the dashboard as the person opened it).
        """
        return self._api.nonce(address, domain=domain)

    def login(self, message: str, signature: str) -> TokenResponse:
        """Exchange the signed message for a JWT."""
        return self._api.login_with_signature(message, signature)

    # --- signed-in reads --------------------------------------------------------------------------
    def me(self, token: str) -> ParticipantStatusOut | None:
        """The signed-in organization, or None when its wallet has not registered an organization."""
        self._api.use_token(token)
        try:
            return self._api.me()
        except ApiError as exc:
            if exc.status == 404 and exc.code == "not_registered":
                return None
            raise

    def secagg(self, round_id: int, token: str) -> SecAggOut | None:
        """The signed-in organization's view of a round's secure aggregation (mode, phase, its own group);
        None when the API has no such route or cannot reach the chain it needs for the view."""
        self._api.use_token(token)
        try:
            return self._api.secagg(round_id)
        except ApiError as exc:
            if (exc.status == 404 and exc.code == NO_ROUTE) or exc.status == 503:
                return None
            raise

    def rewards(self, address: str, token: str) -> list[RewardOut] | None:
        """``address``'s rewards (every page; the API serves them to the address's own token or an
        operator's); None when the API has no such route.

        The token page reads each reward's claim status from the chain itself (:meth:`Chain.reward_standing`),
        so it works with an API that serves no ``status`` / ``claimable_at`` yet."""
        self._api.use_token(token)
        try:
            return self._api.rewards(address)
        except ApiError as exc:
            if exc.status == 404 and exc.code == NO_ROUTE:
                return None
            if exc.status == 404:
                return []
            raise


# ------------------------------------------------------------------------------------------- chain


@dataclass(frozen=True)
class RewardStanding:
    """One account's reward of one round on the chain: its status (None when the chain records no rewards
    for the round) and when the round's dispute window ends (unix time, the chain's clock)."""

    round_id: int
    status: RewardStatus | None
    claimable_at: int


@dataclass(frozen=True)
class AccountView:
    """One wallet's standing on the chain."""

    address: str
    balance: int  # token wei
    votes: int  # current voting power (ERC-5805)
    delegate: str | None  # None when the account has not delegated (its tokens then carry no votes)
    registry_status: RegistryStatus
    stake: int  # token wei
    byzantine_count: int


class Chain:
    """Reads and transaction building against the deployed contracts, over the settings' RPC URL."""

    def __init__(self, rpc_url: str, deployments: Deployments, timeout: float = 10.0) -> None:
        self.reader = ChainReader(rpc_url, deployments, timeout=timeout)
        self.w3 = self.reader.w3
        self.deployments = deployments
        self.governor = deployments.contract(self.w3, "FLGovernor")
        self.timelock = deployments.contract(self.w3, "Timelock")

    @classmethod
    def connect(cls, rpc_url: str, deployments: Deployments) -> Chain:
        chain = cls(rpc_url, deployments)
        try:
            chain.reader.check()
        except DeploymentsError as exc:
            raise ChainUnavailable(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - connection errors come in many types
            raise ChainUnavailable(
                f"the chain at {rpc_url} is not reachable: {type(exc).__name__}: {exc}"
            ) from exc
        return chain

    @property
    def chain_id(self) -> int:
        return self.deployments.chain_id

    @property
    def symbol(self) -> str:
        return self.deployments.token.get("symbol") or self.reader.symbol()

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def params(self) -> ProtocolParams:
        return self.reader.params()

    def token_figures(self) -> TokenFigures:
        return self.reader.token_figures()

    def account(self, address: str) -> AccountView:
        address = to_checksum_address(address)
        enrollment = self.reader.enrollment(address)
        return AccountView(
            address=address,
            balance=self.reader.balance_of(address),
            votes=self.reader.votes(address),
            delegate=self.reader.delegate_of(address),
            registry_status=enrollment.status,
            stake=enrollment.stake,
            byzantine_count=enrollment.byzantine_count,
        )

    def claimed(self, round_id: int, address: str) -> bool:
        return self.reader.claimed(round_id, address)

    def reward_standing(self, round_id: int, address: str, now: int | None = None) -> RewardStanding:
        """Whether ``address``'s reward of ``round_id`` is claimable now, still in the round's dispute window
        (and until when), cancelled or claimed: what the claim button would meet. ``now``: the time of the
        block a claim would land in (default: read now; pass one value for a whole page)."""
        status, record = self.reader.reward_status(round_id, address, now)
        return RewardStanding(int(round_id), status, record.claimable_at)

    def next_block_time(self) -> int:
        return self.reader.next_block_time()

    # --- transactions the wallet sends ------------------------------------------------------------
    def claim_calldata(self, round_id: int, account: str, amount: int, proof: list[str]) -> str:
        return encode_calldata(
            self.reader.distributor,
            "claim",
            args=[
                int(round_id),
                to_checksum_address(account),
                int(amount),
                [bytes.fromhex(p.removeprefix("0x")) for p in proof],
            ],
        )

    def claim_many_calldata(self, account: str, rewards: list[tuple[int, int, list[str]]]) -> str:
        """``RewardDistributor.claimMany`` for (round id, amount, proof) of one account: one transaction and
        one mint for all of them (at most the contract's ``MAX_CLAIMS``)."""
        return encode_calldata(
            self.reader.distributor,
            "claimMany",
            args=[
                [int(r) for r, _, _ in rewards],
                to_checksum_address(account),
                [int(a) for _, a, _ in rewards],
                [[bytes.fromhex(p.removeprefix("0x")) for p in proof] for _, _, proof in rewards],
            ],
        )

    def delegate_calldata(self, delegatee: str) -> str:
        return encode_calldata(self.reader.token, "delegate", args=[to_checksum_address(delegatee)])

    def tx_request(self, sender: str, to: str, data: str) -> dict[str, str]:
        """The ``eth_sendTransaction`` parameter object; the wallet fills in gas, fees and nonce."""
        return {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "data": data,
            "value": "0x0",
            "chainId": hex(self.chain_id),
        }

    def simulate(self, sender: str, to: str, data: str) -> str | None:
        """None when the call would succeed now, else why it would revert (the contract's custom error)."""
        try:
            self.w3.eth.call(
                {"from": to_checksum_address(sender), "to": to_checksum_address(to), "data": HexStr(data)}
            )
        except ContractLogicError as exc:
            raw = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
            if isinstance(raw, str):
                for abi in self.deployments.abis.values():
                    decoded = decode_custom_error(abi, raw)
                    if decoded:
                        name, args = decoded
                        return f"{name}{tuple(_plain(a) for a in args)}" if args else name
            return str(exc.message or exc)
        return None

    def receipt(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The receipt of a transaction the wallet sent, waiting up to ``timeout`` seconds; None if still pending."""
        try:
            return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.2))  # type: ignore[arg-type]
        except (TransactionNotFound, TimeoutError):
            return None
        except Exception as exc:  # noqa: BLE001 - web3 raises its own TimeExhausted
            if type(exc).__name__ == "TimeExhausted":
                return None
            raise


def encode_calldata(contract: Contract, function: str, args: list[Any]) -> str:
    """``contract.encode_abi``: the ``0x`` hex calldata of one call."""
    # web3's encode_abi is an eth-utils combomethod, untyped, so Any to mypy: typed here, once.
    calldata: str = contract.encode_abi(function, args=args)
    return calldata


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


# ---------------------------------------------------------------------------------------- formatting


def tokens(wei: int | str | None) -> float:
    """Token wei (int or decimal string) as a float number of tokens, for charts."""
    if wei is None or wei == "":
        return 0.0
    return float(Decimal(int(wei)) / Decimal(WAD))


def fmt_tokens(wei: int | str | None, symbol: str = "", digits: int = 2) -> str:
    """Token wei as ``1,234.56 SYM`` (exact decimal arithmetic, thousands separators)."""
    value = Decimal(int(wei or 0)) / Decimal(WAD)
    text = f"{value:,.{digits}f}"
    return f"{text} {symbol}".strip()


def fmt_exact(wei: int | str | None) -> str:
    """Token wei as every digit it has and no more (``1,234.5``, ``0.000001``): Decimal, never a float."""
    value = (Decimal(int(wei or 0)) / Decimal(WAD)).normalize()
    return f"{value:,f}"


def fmt_amount(wei: int | str | None) -> str:
    """Token wei for a headline figure: whole tokens from 1,000 up (``1,000,000``), else two decimals (``42.50``).
    The label carries the symbol; :func:`fmt_tokens` gives the exact figure where space allows."""
    value = Decimal(int(wei or 0)) / Decimal(WAD)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}"


def short_address(address: str | None) -> str:
    if not address:
        return "—"
    return f"{address[:6]}…{address[-4:]}"
