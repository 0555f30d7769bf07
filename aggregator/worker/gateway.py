"""The aggregator's only door to the chain (web3.py): governed parameters, round records, slashing.

Exactly-once writes. Every transaction is signed and *persisted* (``chain_transactions``, unique by
purpose) before it is broadcast. A task retried after a crash finds its transaction by purpose and
rebroadcasts the same signed bytes: they carry the same nonce, so they execute at most once. If that
nonce was consumed by another transaction, the contract's own state (e.g. ``isRecorded``) is read
before anything is signed again.

Nonces: the next nonce is max(the chain's pending count, the highest nonce persisted + 1), and the
unique (sender, nonce) constraint makes two concurrent tasks that picked the same one retry with the
next, across processes and restarts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from eth_account import Account
from eth_typing import HexStr
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TransactionNotFound
from web3.types import Nonce, TxParams

from db.models import ChainTransaction, TxStatus
from fedledger.chain.deployments import Deployments
from fedledger.chain.ledger import LedgerContribution, record_round_call
from fedledger.chain.params import ProtocolParams, read_params
from fedledger.chain.reader import ChainParticipant, RegistryStatus
from fedledger.chain.tx import TransactionReverted, decode_custom_error


class ChainWriteError(RuntimeError):
    """A transaction could not be confirmed; the task should retry."""


@dataclass(frozen=True)
class SentTransaction:
    """A chain write the gateway sent (or found sent by an earlier attempt) and its block."""

    purpose: str
    tx_hash: str
    block_number: int | None
    reused: bool  # found persisted from an earlier attempt


class ChainGateway:
    """The worker's chain: its reads, and each write sent exactly once (persisted before broadcast)."""

    def __init__(
        self, rpc_url: str, deployments: Deployments, private_key: str, sessions: sessionmaker[Session]
    ) -> None:
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.deployments = deployments
        self.account = Account.from_key(private_key)
        self._key = private_key
        self.sessions = sessions
        self.ledger = deployments.contract(self.w3, "ContributionLedger")
        self.registry = deployments.contract(self.w3, "ParticipantRegistry")
        self.distributor = deployments.contract(self.w3, "RewardDistributor")
        self.parameters = deployments.contract(self.w3, "ProtocolParameters")

    # --- reads ----------------------------------------------------------------------------------
    def params(self) -> ProtocolParams:
        """The governed parameters now."""
        return read_params(self.parameters)

    def is_recorded(self, round_id: int) -> bool:
        """Whether the ledger holds the round's record."""
        return bool(self.ledger.functions.isRecorded(round_id).call())

    def stake_of(self, address: str) -> int:
        """The account's stake in wei (0 once slashed to zero or withdrawn)."""
        return int(self.registry.functions.stakeOf(address).call())

    def participant(self, address: str) -> ChainParticipant:
        """The registry's record of the account."""
        return ChainParticipant.from_record(
            self.registry, self.registry.functions.participantOf(address).call()
        )

    def latest_round_id(self) -> int:
        """The highest round id the ledger recorded (0 before the first)."""
        return int(self.ledger.functions.latestRoundId().call())

    def pending_slash(self, address: str) -> tuple[int, int]:
        """(amount, executable_at) of the slash queued against the account; (0, 0) when none is."""
        pending = self.registry.functions.pendingSlashOf(address).call()
        return int(pending[0]), int(pending[1])

    def chain_time(self) -> int:
        """The latest block's timestamp (what the contracts compare durations against)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # --- writes ---------------------------------------------------------------------------------
    def send_once(
        self,
        purpose: str,
        call: ContractFunction,
        already_done: Callable[[], bool] | None = None,
        gas: int | None = None,
    ) -> SentTransaction | None:
        """Send ``call`` at most once for ``purpose``; None when ``already_done()`` says the chain has it."""
        with self.sessions() as session:
            existing = session.scalars(
                select(ChainTransaction).where(ChainTransaction.purpose == purpose)
            ).first()
        if existing is not None and existing.status == TxStatus.mined:
            return SentTransaction(purpose, existing.tx_hash, existing.block_number, reused=True)
        if existing is not None and existing.status == TxStatus.signed:
            # Signed by an earlier attempt: see it through (rebroadcasting the same bytes if it was lost).
            outcome = self._broadcast_and_wait(existing)
            if outcome is not None:
                return SentTransaction(purpose, outcome.tx_hash, outcome.block_number, reused=True)
        if already_done is not None and already_done():
            return None
        if existing is not None:
            # Superseded or reverted earlier: its purpose row is reused for the new signature.
            with self.sessions.begin() as session:
                session.delete(session.get(ChainTransaction, existing.id))
        try:
            call.call({"from": self.account.address})
        except ContractLogicError as exc:
            data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
            decoded = decode_custom_error(call.contract_abi, data) if isinstance(data, str) else None
            name = decoded[0] if decoded else str(exc)
            raise TransactionReverted(
                f"{purpose}: {call.fn_name} would revert with {name}",
                decoded[0] if decoded else None,
                decoded[1] if decoded else (),
            ) from exc
        record = self._sign_and_persist(purpose, call, gas)
        sent = self._broadcast_and_wait(record)
        if sent is None:
            raise ChainWriteError(f"{purpose}: transaction {record.tx_hash} was superseded; retry")
        return sent

    def _sign_and_persist(self, purpose: str, call: ContractFunction, gas: int | None) -> ChainTransaction:
        for _ in range(10):
            with self.sessions() as session:
                persisted_max = session.scalar(
                    select(func.max(ChainTransaction.nonce)).where(
                        ChainTransaction.sender == self.account.address
                    )
                )
            chain_next = self.w3.eth.get_transaction_count(self.account.address, "pending")
            nonce = max(chain_next, (persisted_max + 1) if persisted_max is not None else 0)
            # Estimated on the pending block with headroom (see fedledger.chain.tx.send_transaction).
            limit = gas or int(
                call.estimate_gas({"from": self.account.address}, block_identifier="pending") * 1.2
            )
            fields: TxParams = {
                "from": self.account.address,
                "nonce": Nonce(nonce),
                "chainId": self.deployments.chain_id,
                "gas": limit,
            }
            tx = call.build_transaction(fields)
            signed = Account.sign_transaction(tx, self._key)
            record = ChainTransaction(
                purpose=purpose,
                sender=self.account.address,
                nonce=nonce,
                tx_hash=signed.hash.to_0x_hex(),
                raw=signed.raw_transaction.to_0x_hex(),
            )
            try:
                with self.sessions.begin() as session:
                    session.add(record)
                return record
            except IntegrityError:
                continue  # another task took this nonce (or this purpose) first
        raise ChainWriteError(f"{purpose}: could not allocate a nonce after 10 attempts")

    def _broadcast_and_wait(self, record: ChainTransaction, timeout: float = 120.0) -> SentTransaction | None:
        """Broadcast a persisted transaction and wait until it is mined (returned) or superseded (None)."""
        try:
            self.w3.eth.send_raw_transaction(HexStr(record.raw))
        except Exception as exc:  # noqa: BLE001 - "already known" and "nonce too low" are settled below
            message = str(exc).lower()
            if "nonce too low" not in message and "already" not in message and "known" not in message:
                raise ChainWriteError(f"{record.purpose}: broadcast failed: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, sent = self._settle(record)
            if state == "mined":
                return sent
            if state == "superseded":
                return None
            time.sleep(0.25)
        raise ChainWriteError(
            f"{record.purpose}: transaction {record.tx_hash} not mined within {timeout:.0f} s"
        )

    def _settle(self, record: ChainTransaction) -> tuple[str, SentTransaction | None]:
        """("mined", tx), ("pending", None) or ("superseded", None); raises if it reverted on chain."""
        try:
            receipt = self.w3.eth.get_transaction_receipt(HexStr(record.tx_hash))
        except TransactionNotFound:
            if self.w3.eth.get_transaction_count(self.account.address, "latest") > record.nonce:
                # Its nonce was used by another transaction: this one can never be mined.
                self._mark(record.id, TxStatus.failed, None, "superseded: nonce used by another transaction")
                return "superseded", None
            # Lost (e.g. a node restart): rebroadcast the same bytes; the outcome is settled on the next poll.
            with contextlib.suppress(Exception):
                self.w3.eth.send_raw_transaction(HexStr(record.raw))
            return "pending", None
        if receipt["status"] != 1:
            self._mark(record.id, TxStatus.failed, receipt["blockNumber"], "reverted on chain")
            raise ChainWriteError(f"{record.purpose}: transaction {record.tx_hash} reverted on chain")
        self._mark(record.id, TxStatus.mined, receipt["blockNumber"], None)
        return "mined", SentTransaction(
            record.purpose, record.tx_hash, int(receipt["blockNumber"]), reused=False
        )

    def _mark(self, record_id: int, status: TxStatus, block: int | None, error: str | None) -> None:
        with self.sessions.begin() as session:
            row = session.get(ChainTransaction, record_id)
            if row is not None:
                row.status, row.block_number, row.error = status, block, error

    # --- the platform's writes ------------------------------------------------------------------
    def record_round(
        self,
        round_id: int,
        model_hash: bytes,
        rewards_root: bytes,
        contributions: list[LedgerContribution],
        audit_head: bytes,
        audit_count: int,
    ) -> SentTransaction | None:
        """Record a round (ids strictly increasing on-chain) with the audit log's head anchored in it."""
        call = record_round_call(
            self.ledger, round_id, model_hash, rewards_root, contributions, audit_head, audit_count
        )

        def recorded() -> bool:
            if not self.is_recorded(round_id):
                return False
            onchain = bytes(self.ledger.functions.modelHashOf(round_id).call())
            if onchain != model_hash:
                # Not our round: e.g. a database recreated against a chain that already has this round id.
                raise ChainWriteError(
                    f"round {round_id} is recorded on-chain with model sha256:{onchain.hex()}, not ours "
                    f"(sha256:{model_hash.hex()}); the database and the chain disagree: refusing to mark it posted"
                )
            return True

        return self.send_once(f"round:{round_id}:record", call, already_done=recorded)

    def slash(self, round_id: int, address: str, amount: int, reason: str) -> SentTransaction | None:
        """Slash ``amount`` of the account's stake for the round, once; None if nothing is left to take."""
        reason_bytes = Web3.keccak(text=f"fedledger:round:{round_id}:{reason}")
        call = self.registry.functions.slash(address, amount, reason_bytes)
        # A participant already slashed to zero, or withdrawn, has nothing left to take.
        return self.send_once(
            f"round:{round_id}:slash:{address}", call, already_done=lambda: self.stake_of(address) == 0
        )

    def record_byzantine(self, round_id: int, addresses: list[str]) -> SentTransaction | None:
        """Count a Byzantine detection against each account, once per round; None for no account."""
        if not addresses:
            return None
        return self.send_once(
            f"round:{round_id}:byzantine", self.registry.functions.recordByzantine(addresses)
        )

    def mark_active(self, round_id: int, addresses: list[str]) -> SentTransaction | None:
        """Refresh the on-chain activity evidence (``lastActiveAt``) of organizations seen in round
        ``round_id``, and record that they took part in it (an exit waits until that round is recorded)."""
        if not addresses:
            return None
        call = self.registry.functions.markActive(round_id, addresses)
        return self.send_once(f"round:{round_id}:active", call)

    def suspend_inactive(self, round_id: int, addresses: list[str]) -> SentTransaction | None:
        """Suspend organizations idle past the governed activity timeout (the contract checks the evidence)."""
        if not addresses:
            return None

        def done() -> bool:
            return all(self.participant(a).status != RegistryStatus.active for a in addresses)

        return self.send_once(
            f"round:{round_id}:inactive",
            self.registry.functions.suspendInactive(addresses),
            already_done=done,
        )

    def execute_slash(self, address: str, executable_at: int) -> SentTransaction | None:
        """Execute the slash queued against the account until ``executable_at``, once; None if it is no longer
        pending (executed by anyone, or cancelled by a guardian)."""

        def settled() -> bool:
            amount, until = self.pending_slash(address)
            return amount == 0 or until != executable_at

        return self.send_once(
            f"slash:execute:{address}:{executable_at}",
            self.registry.functions.executeSlash(address),
            already_done=settled,
        )

    def anchor_audit(self, audit_head: bytes, audit_count: int) -> SentTransaction | None:
        """Anchor the audit log's head (entry number ``audit_count``) between rounds, once per count."""
        return self.send_once(
            f"audit:anchor:{audit_count}", self.ledger.functions.anchorAudit(audit_head, audit_count)
        )
