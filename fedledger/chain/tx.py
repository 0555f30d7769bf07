"""Signed transactions from a local key, with custom-error reverts decoded into readable exceptions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from eth_abi import decode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt


class TransactionReverted(RuntimeError):
    """A transaction reverted (in simulation or on chain). ``error`` names the custom error when known."""

    def __init__(self, message: str, error: str | None = None, args: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = args


def _error_signature(entry: Mapping[str, Any]) -> str:
    return f"{entry['name']}({','.join(_abi_type(i) for i in entry.get('inputs', []))})"


def _abi_type(item: Mapping[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


def decode_custom_error(abi: Sequence[Mapping[str, Any]], data: str) -> tuple[str, tuple[Any, ...]] | None:
    """Name and arguments of the custom error in ``abi`` whose selector starts the hex revert ``data``."""
    try:
        raw = bytes.fromhex(data.removeprefix("0x"))
    except ValueError:
        return None
    if len(raw) < 4:
        return None
    for entry in abi:
        if entry.get("type") != "error":
            continue
        signature = _error_signature(entry)
        if function_signature_to_4byte_selector(signature) == raw[:4]:
            types = [_abi_type(i) for i in entry.get("inputs", [])]
            return entry["name"], tuple(decode(types, raw[4:])) if types else ()
    return None


def send_transaction(w3: Web3, call: ContractFunction, private_key: str, gas: int | None = None) -> TxReceipt:
    """Simulate, sign and send ``call`` from ``private_key``'s account and wait for its receipt.

    Simulation first means a revert surfaces as :class:`TransactionReverted` naming the contract's custom
    error, before any gas is spent.
    """
    sender = Account.from_key(private_key).address
    abi = call.contract_abi
    try:
        # Estimated against the pending block: gas can depend on the block number (ERC20Votes writes a new
        # checkpoint per block, overwriting within one), and the transaction will run in the next block.
        estimate = gas or int(call.estimate_gas({"from": sender}, block_identifier="pending") * 1.2)
        tx = call.build_transaction(
            {
                "from": sender,
                "nonce": w3.eth.get_transaction_count(sender, "pending"),
                "chainId": w3.eth.chain_id,
                "gas": estimate,
            }
        )
    except ContractLogicError as exc:
        # Nodes differ in where the revert data sits (Hardhat also adds a text message); the selector decides.
        data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
        decoded = (
            decode_custom_error(cast(list[dict[str, Any]], abi), data) if isinstance(data, str) else None
        )
        if decoded:
            name, args = decoded
            raise TransactionReverted(f"{call.fn_name} reverted with {name}{args}", name, args) from exc
        raise TransactionReverted(f"{call.fn_name} reverted: {exc.message or exc.data!r}") from exc
    signed = Account.sign_transaction(tx, private_key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
    if receipt["status"] != 1:
        raise TransactionReverted(f"{call.fn_name} reverted on chain in tx {tx_hash.hex()}")
    return receipt
