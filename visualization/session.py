"""What one dashboard session knows: the API and chain it reads, the signed-in wallet, its transactions.

Sign-in is Sign-In with Ethereum through the wallet component, never a pasted token:

1. "Connect wallet": the wallet answers ``eth_requestAccounts`` (and ``eth_chainId``);
2. Python asks the API for the EIP-4361 challenge of that address (``POST /v1/auth/nonce``), naming the
   dashboard's own host as the message's domain (wallets warn when it is not the page asking);
3. the wallet signs the challenge's exact message with ``personal_sign`` (asked at once, no second click);
4. Python exchanges message and signature for a JWT (``POST /v1/auth/login``) kept in ``st.session_state``.

Transactions (claim, vote, propose, queue, execute, delegate) are built here from calldata that web3 encoded
and sent by the wallet with ``eth_sendTransaction``; Python then waits for the receipt on its own RPC.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from visualization.data import (
    DASHBOARD_ERRORS,
    Api,
    Chain,
    DashboardConfig,
    short_address,
)
from visualization.reverts import explain
from visualization.wallet import wallet_request

AUTH = "auth"  # {"token", "address", "expires_at", "roles"}
WALLET = "wallet"  # {"address", "chain_id"} once connected
CHALLENGE = "login_challenge"  # {"id", "address", "message"} while the wallet is asked to sign
TX_LOG = "tx_log"  # [{"label", "hash", "status", "detail"}], newest first
FLASH = "flash"  # one message shown at the top of the runs of the next few seconds
# A hidden component's answer (the session cookie written right after sign-in) reruns the script at once:
# a message shown by one run only would vanish before anyone reads it.
FLASH_SECONDS = 6.0
# The JWT kept in a cookie of the dashboard's origin (written by the wallet component), so that reloading
# the page keeps the session until the token expires; the API still checks the token on every request.
SESSION_COOKIE = "fedledger_session"
FORGET = "forget_session"  # the cookie is being removed (signed out): do not restore from it


@dataclass
class Context:
    """Everything a page renders from, built once per script run."""

    config: DashboardConfig
    api: Api
    chain: Chain | None
    chain_error: str | None

    @property
    def auth(self) -> dict[str, Any] | None:
        return signed_in()

    @property
    def symbol(self) -> str:
        return self.chain.symbol if self.chain is not None else ""


@st.cache_resource(ttl=30, show_spinner=False)
def _chain(api_url: str, rpc_url: str, timeout: float) -> Chain:
    with Api(api_url, timeout=timeout) as api:
        deployments = api.deployments()
    return Chain.connect(rpc_url, deployments)


def build_context(config: DashboardConfig | None = None) -> Context:
    config = config or DashboardConfig.from_settings()
    api = Api(config.api_url, timeout=config.api_timeout)
    try:
        chain, error = _chain(config.api_url, config.chain_rpc_url, config.api_timeout), None
    except Exception as exc:  # noqa: BLE001 - shown to the person; the pages that need the chain say so
        chain, error = None, str(exc)
    return Context(config=config, api=api, chain=chain, chain_error=error)


# ------------------------------------------------------------------------------------------- sign-in


def signed_in() -> dict[str, Any] | None:
    """The signed-in wallet's JWT record, or None (also once the token has expired)."""
    auth: dict[str, Any] | None = st.session_state.get(AUTH)
    if not auth:
        return None
    try:
        expires = datetime.fromisoformat(str(auth["expires_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return auth
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires <= datetime.now(UTC):
        st.session_state.pop(AUTH, None)
        flash("warning", "Your session expired: sign in again with your wallet.")
        return None
    return auth


def sign_out() -> None:
    for key in (AUTH, WALLET, CHALLENGE):
        st.session_state.pop(key, None)
    st.session_state[FORGET] = f"forget-{uuid.uuid4().hex}"


def _token_claims(token: str) -> dict[str, Any] | None:
    """The JWT's claims, unverified: only to show who is signed in until when; the API verifies it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _restore(ctx: Context) -> None:
    """A reloaded page: the session the cookie keeps, if its token has not expired and the API accepts it."""
    if st.session_state.get(AUTH) or st.session_state.get(FORGET):
        return
    token = st.context.cookies.get(SESSION_COOKIE)
    claims = _token_claims(token) if isinstance(token, str) and token else None
    if not token or claims is None or not isinstance(claims.get("exp"), int):
        return
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if expires <= datetime.now(UTC):
        return
    try:
        ctx.api.me(token)
    except DASHBOARD_ERRORS:
        # Refused (another API secret, a revoked operator) or unreachable: sign in again.
        return
    st.session_state[AUTH] = {
        "token": token,
        "address": str(claims.get("sub")),
        "expires_at": expires.isoformat(),
        "roles": list(claims.get("roles") or []),
    }


def _session_cookie(auth: dict[str, Any]) -> None:
    """Keep the signed-in session's token in the browser until it expires (nothing shown)."""
    expires = datetime.fromisoformat(str(auth["expires_at"]).replace("Z", "+00:00"))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    seconds = max(int((expires - datetime.now(UTC)).total_seconds()), 0)
    wallet_request(
        key="wallet-remember",
        label="",
        request_id="remember-" + hashlib.sha256(str(auth["token"]).encode()).hexdigest()[:24],
        method="fedledger_remember",
        params=[auth["token"], seconds],
        auto=True,
        hidden=True,
    )


def _forget_cookie() -> None:
    request_id = st.session_state.get(FORGET)
    if request_id:
        wallet_request(
            key="wallet-forget",
            label="",
            request_id=str(request_id),
            method="fedledger_forget",
            auto=True,
            hidden=True,
        )


def flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text, time.monotonic() + FLASH_SECONDS)


def show_flash() -> None:
    message = st.session_state.get(FLASH)
    if not message:
        return
    kind, text, until = message
    if time.monotonic() > until:
        st.session_state.pop(FLASH, None)
        return
    getattr(st, kind if kind in ("success", "info", "warning", "error") else "info")(text)


def _page_host(connect_result: Any) -> str | None:
    """The dashboard's host[:port] as the person opened it: the message's domain must be the page's origin.

    The wallet component reports the page's host; the request's Host header stands in for it otherwise.
    """
    if isinstance(connect_result, dict) and connect_result.get("host"):
        return str(connect_result["host"])
    host = st.context.headers.get("Host")
    return str(host) if host else None


def _hex_message(message: str) -> str:
    return "0x" + message.encode("utf-8").hex()


def wallet_sidebar(ctx: Context) -> None:
    """The sidebar's wallet panel: connect → sign in → signed in (with sign out)."""
    st.subheader("Wallet")
    _restore(ctx)
    auth = signed_in()
    if auth is not None:
        _signed_in_panel(ctx, auth)
        _session_cookie(auth)
        return
    _forget_cookie()
    challenge = st.session_state.get(CHALLENGE)
    if challenge is None:
        st.caption("Organizations sign in with their wallet (Sign-In with Ethereum).")
        response = wallet_request(
            key="wallet-connect",
            label="Connect wallet",
            request_id="connect",
            method="fedledger_connect",
            pending="Approve the connection in your wallet…",
        )
        if response is None:
            return
        if not response.ok:
            st.error(f"Wallet: {response.error_message or response.error_code}")
            return
        result = response.result or {}
        accounts = result.get("accounts") if isinstance(result, dict) else result
        if not accounts:
            st.error("The wallet shared no account.")
            return
        address = str(accounts[0])
        chain_id = int(str(result.get("chainId", "0x0")), 16) if isinstance(result, dict) else None
        st.session_state[WALLET] = {"address": address, "chain_id": chain_id}
        try:
            issued = ctx.api.nonce(address, domain=_page_host(result))
        except DASHBOARD_ERRORS as exc:
            st.error(f"Could not start sign-in: {exc}")
            return
        st.session_state[CHALLENGE] = {
            "id": f"siwe-{uuid.uuid4().hex}",
            "address": address,
            "message": issued.message,
        }
        st.rerun()
    # Step 3: the wallet signs the server's message.
    st.caption(
        f"Connected {short_address(challenge['address'])}. Sign the message in your wallet to sign in."
    )
    response = wallet_request(
        key="wallet-sign",
        label="Sign in with Ethereum",
        request_id=challenge["id"],
        method="personal_sign",
        params=[_hex_message(challenge["message"]), challenge["address"]],
        auto=True,
        pending="Sign the sign-in message in your wallet…",
    )
    if st.button("Cancel", key="wallet-cancel"):
        sign_out()
        st.rerun()
    if response is None:
        return
    if not response.ok:
        st.error(
            "Signature refused in the wallet." if response.rejected else f"Wallet: {response.error_message}"
        )
        return
    try:
        token = ctx.api.login(challenge["message"], str(response.result))
    except DASHBOARD_ERRORS as exc:
        st.session_state.pop(CHALLENGE, None)
        st.error(f"Sign-in refused: {exc}")
        return
    st.session_state[AUTH] = {
        "token": token.access_token,
        "address": token.address,
        "expires_at": token.expires_at.isoformat(),
        "roles": token.roles,
    }
    st.session_state.pop(CHALLENGE, None)
    st.session_state.pop(FORGET, None)
    flash("success", f"Signed in as {token.address}.")
    st.rerun()


def _signed_in_panel(ctx: Context, auth: dict[str, Any]) -> None:
    try:
        me = ctx.api.me(auth["token"])
    except DASHBOARD_ERRORS as exc:
        if getattr(exc, "status", None) == 401:
            sign_out()
            flash("warning", "The API no longer accepts your session: sign in again.")
            st.rerun()
        me = None
    name = me.org_name if me else "no registered organization"
    st.markdown(f"**{name}**  \n`{auth['address']}`")
    roles = ", ".join(auth.get("roles") or [])
    if roles:
        st.caption(f"Roles: {roles}")
    wallet = st.session_state.get(WALLET) or {}
    if ctx.chain is not None and wallet.get("chain_id") not in (None, ctx.chain.chain_id):
        st.warning(
            f"Your wallet is on chain {wallet['chain_id']}, fedledger runs on chain {ctx.chain.chain_id}."
        )
        response = wallet_request(
            key="wallet-switch",
            label="Switch network",
            request_id=f"switch-{ctx.chain.chain_id}",
            method="wallet_switchEthereumChain",
            params=[{"chainId": hex(ctx.chain.chain_id)}],
            kind="secondary",
        )
        if response is not None:
            if response.ok:
                wallet["chain_id"] = ctx.chain.chain_id
                st.rerun()
            st.error(f"Wallet: {response.error_message}")
    if st.button("Sign out", key="wallet-sign-out"):
        sign_out()
        st.rerun()


# --------------------------------------------------------------------------------------- transactions


def transaction_button(
    ctx: Context,
    *,
    key: str,
    label: str,
    to: str,
    data: str,
    sender: str,
    describe: str,
    disabled: bool = False,
    simulate: bool = True,
) -> dict[str, Any] | None:
    """A wallet button that sends ``data`` to ``to`` from ``sender``; returns the receipt when it is mined.

    The call is simulated first: a transaction that would revert disables the button and says why.
    """
    assert ctx.chain is not None
    reason = ctx.chain.simulate(sender, to, data) if simulate and not disabled else None
    if reason:
        st.warning(explain(reason), icon="ℹ️")
        st.caption(f"Contract error: `{reason}`")
    request_id = "tx-" + hashlib.sha256(f"{sender}|{to}|{data}".encode()).hexdigest()[:24]
    response = wallet_request(
        key=key,
        label=label,
        request_id=request_id,
        method="eth_sendTransaction",
        params=[ctx.chain.tx_request(sender, to, data)],
        disabled=disabled or bool(reason),
        pending="Confirm the transaction in your wallet…",
    )
    if response is None:
        return None
    if not response.ok:
        _log(describe, None, "rejected" if response.rejected else "failed", response.error_message)
        st.error(
            "Transaction refused in the wallet." if response.rejected else f"Wallet: {response.error_message}"
        )
        return None
    tx_hash = str(response.result)
    with st.spinner("Waiting for the transaction to be mined…"):
        receipt = ctx.chain.receipt(tx_hash, timeout=60)
    if receipt is None:
        _log(describe, tx_hash, "pending", "")
        flash("info", f"{describe}: sent ({short_address(tx_hash)}), not mined yet.")
    elif receipt.get("status") == 1:
        _log(describe, tx_hash, "confirmed", f"block {receipt.get('blockNumber')}")
        flash("success", f"{describe}: confirmed in block {receipt.get('blockNumber')}.")
    else:
        _log(describe, tx_hash, "reverted", "")
        flash("error", f"{describe}: the transaction reverted.")
    st.rerun()
    return receipt  # unreachable under Streamlit (rerun raises); kept for callers outside a script run


def keep_showing(key: str, show: bool) -> bool:
    """Whether to render an action's button: when ``show``, and ever after in this session once it was shown.

    A transaction changes what the page would show (a vote cast hides the vote button; a claim leaves the
    claimable list), but the wallet's answer reaches Python only through the component that sent it, so
    that component must still be rendered in the run that receives the answer.
    """
    shown: set[str] = st.session_state.setdefault("_shown_actions", set())
    if show:
        shown.add(key)
    return key in shown


def _log(label: str, tx_hash: str | None, status: str, detail: str) -> None:
    log = st.session_state.setdefault(TX_LOG, [])
    log.insert(0, {"label": label, "hash": tx_hash, "status": status, "detail": detail})
    del log[20:]


def transactions_sidebar() -> None:
    log = st.session_state.get(TX_LOG) or []
    if not log:
        return
    st.subheader("Your transactions")
    for entry in log[:5]:
        tx = f" `{short_address(entry['hash'])}`" if entry.get("hash") else ""
        st.caption(f"{entry['label']}: **{entry['status']}**{tx} {entry.get('detail') or ''}".strip())
