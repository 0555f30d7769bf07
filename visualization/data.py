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
from eth_utils import to_checksum_address
from web3.exceptions import ContractLogicError, TransactionNotFound

from client.api import error_from_response
from client.errors import ApiError, ApiUnreachableError, ClientError
from fedledger.chain.deployments import Deployments, DeploymentsError
from fedledger.chain.params import WAD, ProtocolParams
from fedledger.chain.reader import ChainReader, RegistryStatus, RewardStatus, TokenFigures
from fedledger.chain.tx import decode_custom_error
from fedledger.config import Settings


class DashboardError(RuntimeError):
    """Something the dashboard needs is unreachable or answered unexpectedly; the message says what.

    The API's refusals are the organization client's typed errors (:class:`client.errors.ApiError`, with
    ``status``, ``code`` and ``detail``; :class:`~client.errors.ApiUnreachableError` when it did not answer):
    one error type for every caller of the API. :data:`DASHBOARD_ERRORS` catches both kinds.
    """


class ChainUnavailable(DashboardError):
    """The chain's RPC endpoint did not answer, or serves another chain than the deployments'."""


# The API's own errors carry a code; its framework's 404 for an unknown route has none (client.api's
# error_from_response then names it after the status).
NO_ROUTE = "http_404"

DASHBOARD_ERRORS: tuple[type[Exception], ...] = (DashboardError, ClientError)


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads from: the settings' ``api_url`` and ``chain_rpc_url``."""

    api_url: str
    chain_rpc_url: str

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DashboardConfig:
        # A fresh Settings per script run (not the cached one): the environment is read each time.
        settings = settings or Settings()
        return cls(api_url=settings.api_url.rstrip("/"), chain_rpc_url=settings.chain_rpc_url)


# --------------------------------------------------------------------------------------------- API


class Api:
    """The fedledger API, as the dashboard uses it (server side: the browser never talks to the API)."""

    def __init__(
        self, base_url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiUnreachableError(
                f"the API at {self.base_url} is not reachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.json()

    # --- public reads ------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        return self._request("GET", "/v1/stats/overview")

    def rounds(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/stats/rounds", params={"limit": limit})

    def contributions(
        self, round_id: int | None = None, address: str | None = None, limit: int = 5000
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if round_id is not None:
            params["round_id"] = round_id
        if address is not None:
            params["address"] = address
        return self._request("GET", "/v1/stats/contributions", params=params)

    def participants(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/stats/participants")

    def token(self) -> dict[str, Any] | None:
        """Token figures, or None while the API cannot reach the chain."""
        try:
            return self._request("GET", "/v1/stats/token")
        except ApiError as exc:
            if exc.status == 503:
                return None
            raise

    def current_round(self) -> dict[str, Any] | None:
        """The round in progress (or the latest one); None before the first round."""
        try:
            return self._request("GET", "/v1/rounds/current")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def current_model(self) -> dict[str, Any] | None:
        """The active model's metadata; None before the genesis model is uploaded."""
        try:
            return self._request("GET", "/v1/models/current")
        except ApiError as exc:
            if exc.status in (404, 409):
                return None
            raise

    def deployments(self) -> dict[str, Any]:
        return self._request("GET", "/v1/chain/deployments")

    # --- sign-in ----------------------------------------------------------------------------------
    def nonce(self, address: str, domain: str | None = None) -> dict[str, Any]:
        """The server's EIP-4361 challenge (``message`` is what the wallet signs with personal_sign).

        ``domain`` is the host[:port] of the page asking the wallet (the dashboard as the person opened it).
        """
        body = {"address": address} | ({"domain": domain} if domain else {})
        return self._request("POST", "/v1/auth/nonce", json=body)

    def login(self, message: str, signature: str) -> dict[str, Any]:
        """Exchange the signed message for a JWT (``access_token``, ``expires_at``, ``address``, ``roles``)."""
        return self._request("POST", "/v1/auth/login", json={"message": message, "signature": signature})

    # --- signed-in reads --------------------------------------------------------------------------
    def me(self, token: str) -> dict[str, Any] | None:
        """The signed-in organization, or None when its wallet has not registered an organization."""
        try:
            return self._request("GET", "/v1/participants/me", token=token)
        except ApiError as exc:
            if exc.status == 404 and exc.code == "not_registered":
                return None
            raise

    def rewards(self, address: str, token: str | None = None) -> list[dict[str, Any]] | None:
        """``[{round_id, amount_wei, proof, claimed, ...}]`` for ``address`` (every page; the API serves them
        to the address's own token or an operator's); None when the API has no such route.

        The token page reads each reward's claim status from the chain itself (:meth:`Chain.reward_standing`),
        so it works with an API that serves no ``status`` / ``claimable_at`` yet."""
        rewards: list[dict[str, Any]] = []
        cursor = 0
        try:
            while True:
                page = self._request("GET", f"/v1/rewards/{address}", token=token, params={"cursor": cursor})
                rewards.extend(page["rewards"])
                if page.get("next_cursor") is None or int(page["next_cursor"]) <= cursor:
                    return rewards
                cursor = int(page["next_cursor"])
        except ApiError as exc:
            if exc.status == 404 and exc.code == NO_ROUTE:
                return None
            if exc.status == 404:
                return []
            raise


# ------------------------------------------------------------------------------------------- chain


def deployments_from_json(raw: dict[str, Any]) -> Deployments:
    """The deployments the API serves at ``/v1/chain/deployments`` (the same shape as the deployments file)."""
    return Deployments.from_dict(raw, source="the API's deployments")


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
        return self.reader.distributor.encode_abi(
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
        return self.reader.distributor.encode_abi(
            "claimMany",
            args=[
                [int(r) for r, _, _ in rewards],
                to_checksum_address(account),
                [int(a) for _, a, _ in rewards],
                [[bytes.fromhex(p.removeprefix("0x")) for p in proof] for _, _, proof in rewards],
            ],
        )

    def delegate_calldata(self, delegatee: str) -> str:
        return self.reader.token.encode_abi("delegate", args=[to_checksum_address(delegatee)])

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
                {"from": to_checksum_address(sender), "to": to_checksum_address(to), "data": data}
            )  # type: ignore[typeddict-item]
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


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


# ---------------------------------------------------------------------------------------- formatting


def tokens(wei: int | str | None) -> float:
    """Token wei (int or decimal string) as a float number of tokens, for charts."""
    if wei in (None, ""):
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
