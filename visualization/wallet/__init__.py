"""The wallet button: a Streamlit custom component that forwards one EIP-1193 request to the browser's wallet.

``frontend/`` holds the component as static files (``index.html`` + ``wallet.js``), declared with
``declare_component(path=...)``: Streamlit serves them from the dashboard's own origin, so nothing is
loaded from the internet and no bundler is involved.

Python prepares the request (``eth_requestAccounts``, ``personal_sign`` over the server's EIP-4361
message, ``eth_sendTransaction`` with calldata web3 encoded); the person clicks the button, the wallet
answers, and :func:`wallet_request` returns that answer exactly once (each answer carries a fresh nonce).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

FRONTEND = Path(__file__).resolve().parent / "frontend"

_component = components.declare_component("fedledger_wallet", path=str(FRONTEND))

_HANDLED = "_wallet_handled_nonces"


@dataclass(frozen=True)
class WalletResponse:
    request_id: str
    ok: bool
    result: Any = None
    # EIP-1193 codes are integers; a JSON-RPC error may carry a string one.
    error_code: int | str | None = None
    error_message: str = ""

    @property
    def rejected(self) -> bool:
        """The person said no in the wallet (EIP-1193 error 4001)."""
        return self.error_code == 4001


def wallet_request(
    *,
    key: str,
    label: str,
    request_id: str,
    method: str,
    params: list[Any] | None = None,
    auto: bool = False,
    disabled: bool = False,
    kind: str = "primary",
    caption: str = "",
    pending: str = "",
    help: str = "",  # noqa: A002 - Streamlit's own name for it
    hidden: bool = False,
) -> WalletResponse | None:
    """Render a wallet button for one request; return the wallet's answer the first time it arrives.

    ``request_id`` names the request (stable across reruns); ``auto`` runs it without a click, once per id.
    ``method`` is any EIP-1193 method, or ``fedledger_connect`` (accounts and chain id in one answer).
    """
    value = _component(
        request={"id": request_id, "method": method, "params": params or []},
        label=label,
        auto=auto,
        disabled=disabled,
        kind=kind,
        caption=caption,
        pending=pending,
        help=help,
        hidden=hidden,
        key=key,
        default=None,
    )
    return take_response(value, request_id)


def take_response(value: Any, request_id: str) -> WalletResponse | None:
    """The component's value as a :class:`WalletResponse` if it answers ``request_id`` and is new."""
    if not isinstance(value, dict) or value.get("id") != request_id or not value.get("nonce"):
        return None
    handled: set[str] = st.session_state.setdefault(_HANDLED, set())
    nonce = str(value["nonce"])
    if nonce in handled:
        return None
    handled.add(nonce)
    error = value.get("error") or {}
    return WalletResponse(
        request_id=request_id,
        ok=bool(value.get("ok")),
        result=value.get("result"),
        error_code=error.get("code"),
        error_message=str(error.get("message") or ""),
    )
