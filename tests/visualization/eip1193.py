"""A test EIP-1193 provider backed by a real key, standing in for MetaMask in the browser tests.

The page gets ``window.ethereum`` from an init script; its ``request({method, params})`` forwards to
:meth:`TestWallet.handle`, a Python function exposed to the page with Playwright's ``expose_function``.
Like MetaMask it lives in the top document only: the dashboard's wallet component (an iframe) must find it
as ``window.parent.ethereum``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address
from web3 import Web3

BINDING = "__fedledgerTestWallet"

INIT_SCRIPT = """
(() => {
  if (window !== window.top) return;  // like MetaMask: the provider is injected into the top document
  const listeners = {};
  const provider = {
    isFedledgerTestWallet: true,
    isMetaMask: false,
    async request(args) {
      if (!args || typeof args.method !== "string") throw Object.assign(new Error("invalid request"), {code: -32600});
      const raw = await window.BINDING(JSON.stringify({method: args.method, params: args.params || []}));
      const answer = JSON.parse(raw);
      if (answer.error) throw Object.assign(new Error(answer.error.message), {code: answer.error.code});
      return answer.result;
    },
    on(event, handler) { (listeners[event] = listeners[event] || []).push(handler); return provider; },
    removeListener(event, handler) {
      listeners[event] = (listeners[event] || []).filter((h) => h !== handler); return provider;
    },
  };
  Object.defineProperty(window, "ethereum", {value: provider, configurable: false, writable: false});
})();
""".replace("BINDING", BINDING)


@dataclass
class TestWallet:
    """Answers the EIP-1193 methods the dashboard uses, signing with ``private_key`` and sending via ``w3``."""

    __test__ = False  # not a pytest test class

    w3: Web3
    private_key: str
    connected: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return Account.from_key(self.private_key).address

    def handle(self, raw: str) -> str:
        request = json.loads(raw)
        self.calls.append(request)
        try:
            result = self._dispatch(request["method"], request.get("params") or [])
        except WalletError as exc:
            return json.dumps({"error": {"code": exc.code, "message": str(exc)}})
        except Exception as exc:  # noqa: BLE001 - a node error reaches the page as a JSON-RPC internal error
            return json.dumps({"error": {"code": -32603, "message": f"{type(exc).__name__}: {exc}"}})
        return json.dumps({"result": result})

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        if method == "eth_requestAccounts":
            self.connected = True
            return [self.address]
        if method == "eth_accounts":
            return [self.address] if self.connected else []
        if method == "eth_chainId":
            return hex(self.w3.eth.chain_id)
        if method == "wallet_switchEthereumChain":
            if int(params[0]["chainId"], 16) != self.w3.eth.chain_id:
                raise WalletError(4902, "unknown chain")
            return None
        self._require_connected()
        if method == "personal_sign":
            data, address = params[0], params[1]
            self._require_self(address)
            message = (
                encode_defunct(hexstr=data) if str(data).startswith("0x") else encode_defunct(text=str(data))
            )
            return Account.sign_message(message, self.private_key).signature.to_0x_hex()
        if method == "eth_sendTransaction":
            return self._send(params[0])
        raise WalletError(4200, f"unsupported method {method}")

    def _send(self, tx: dict[str, Any]) -> str:
        self._require_self(tx["from"])
        if "chainId" in tx and int(tx["chainId"], 16) != self.w3.eth.chain_id:
            raise WalletError(4901, "the transaction is for another chain")
        call = {
            "from": self.address,
            "to": to_checksum_address(tx["to"]),
            "data": tx.get("data", "0x"),
            "value": int(tx.get("value", "0x0"), 16),
        }
        gas = self.w3.eth.estimate_gas(call)  # type: ignore[arg-type]
        fees = self.w3.eth.fee_history(1, "latest")
        base = int(fees["baseFeePerGas"][-1])
        signed = Account.sign_transaction(
            {
                **call,
                "gas": int(gas * 1.2),
                "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
                "chainId": self.w3.eth.chain_id,
                "maxFeePerGas": 2 * base + 10**9,
                "maxPriorityFeePerGas": 10**9,
            },
            self.private_key,
        )
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()
        self.sent.append(tx_hash)
        return tx_hash

    def _require_connected(self) -> None:
        if not self.connected:
            raise WalletError(4100, "not connected: call eth_requestAccounts first")

    def _require_self(self, address: str) -> None:
        if to_checksum_address(address) != self.address:
            raise WalletError(4100, f"{address} is not this wallet's account")


class WalletError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
