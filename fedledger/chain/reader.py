"""The one reader of the chain's state, for the API, the dashboard and the organization SDK.

Enrollment, governed parameters, token figures and balances, the ledger's model hashes and the reward
distributor's roots and claims. Writes are elsewhere: the worker's gateway (``aggregator/worker/gateway.py``)
and the SDK's signed transactions (``client/chain.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import (
    function_abi_to_4byte_selector,
    get_abi_input_types,
    get_abi_output_types,
    to_checksum_address,
)
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint

from fedledger.chain.deployments import Deployments
from fedledger.chain.ledger import AuditAnchor, audit_anchors
from fedledger.chain.params import ProtocolParams, read_params


class RegistryStatus(IntEnum):
    """``ParticipantRegistry.Status``."""

    none = 0
    active = 1
    suspended = 2
    slashed = 3
    exited = 4


@dataclass(frozen=True)
class Enrollment:
    """A participant's record in the ``ParticipantRegistry``."""

    status: RegistryStatus
    stake: int
    byzantine_count: int


@dataclass(frozen=True)
class ChainParticipant:
    """``ParticipantRegistry.participantOf``, read by ABI field names."""

    status: RegistryStatus
    stake: int
    byzantine_count: int
    slash_count: int
    unlock_round: int
    last_active_at: int
    inactive: bool
    last_round: int  # the latest round the aggregator marked it in (markActive); an exit waits for its record

    @classmethod
    def from_record(cls, registry: Contract, record: Sequence[Any]) -> ChainParticipant:
        """Name the fields of a ``participantOf`` result by the registry's ABI."""
        return cls.from_fields(_participant_abi(registry), record)

    @classmethod
    def from_fields(cls, components: Sequence[dict[str, Any]], record: Sequence[Any]) -> ChainParticipant:
        """Name the fields of a ``participantOf`` result by its ABI components."""
        fields = {item["name"]: value for item, value in zip(components, record, strict=True)}
        return cls(
            status=RegistryStatus(int(fields["status"])),
            stake=int(fields["stake"]),
            byzantine_count=int(fields["byzantineCount"]),
            slash_count=int(fields["slashCount"]),
            unlock_round=int(fields["unlockRound"]),
            last_active_at=int(fields["lastActiveAt"]),
            inactive=bool(fields["inactive"]),
            last_round=int(fields["lastRound"]),
        )


def _participant_abi(registry: Contract) -> list[dict[str, Any]]:
    components: list[dict[str, Any]] = _participant_of_abi(registry)["outputs"][0]["components"]
    return components


def _participant_of_abi(registry: Contract) -> dict[str, Any]:
    abi: list[dict[str, Any]] = list(registry.abi)  # type: ignore[arg-type]
    for entry in abi:
        if entry.get("type") == "function" and entry.get("name") == "participantOf":
            return entry
    raise RuntimeError("ParticipantRegistry ABI lacks participantOf")


@dataclass(frozen=True)
class RoundRewards:
    """A round's rewards record, as ``RewardDistributor.roundRewards`` returns it."""

    root: bytes  # the Merkle root (32 zero bytes when the round pays nothing or is not recorded)
    total: int  # most that may be minted for the round, in token wei
    claimed: int  # minted so far, in token wei
    claimable_at: int  # unix time (the chain's block time) from which claims are paid
    cancelled: bool  # governance or a guardian cancelled the rewards during their dispute window


_ZERO_ROOT = b"\x00" * 32


class RewardStatus(StrEnum):
    """Where one account's reward of a round stands on the chain: what a claim sent now would meet."""

    claimable = "claimable"  # the dispute window is over: a claim with the right proof is paid
    in_dispute_window = "in_dispute_window"  # recorded, claimable from ``claimable_at`` on (may be cancelled)
    cancelled = "cancelled"  # cancelled during the window by governance or a guardian: never claimable
    claimed = "claimed"  # already paid to the account


@dataclass(frozen=True)
class RecordedRewards:
    """A round's rewards as the ledger's events tell them: the ``RoundRecorded`` root, total and
    ``claimableAt``, and whether a ``RewardsCancelled`` followed (what :func:`reward_status` needs)."""

    root: bytes
    total: int
    claimable_at: int
    cancelled: bool


def reward_status(record: RoundRewards | RecordedRewards, claimed: bool, now: int) -> RewardStatus | None:
    """The status of an account's reward in a round with rewards ``record``, in a block at time ``now``.

    ``claimed``: whether the account has claimed it (``RewardDistributor.claimed``). None when the chain
    records no rewards for the round (a zero root): nothing can be said, and nothing can be claimed.
    The order is the contract's: a claimed reward was paid after its window (a cancelled one never is),
    a cancelled round refuses every claim, and one in its window refuses until ``claimable_at``.
    """
    if claimed:
        return RewardStatus.claimed
    if record.cancelled:
        return RewardStatus.cancelled
    if record.root == _ZERO_ROOT:
        return None
    if now < record.claimable_at:
        return RewardStatus.in_dispute_window
    return RewardStatus.claimable


@dataclass(frozen=True)
class TokenFigures:
    """The token's supply, what is staked, the treasury (timelock) balance and the active participants."""

    total_supply: int
    total_staked: int
    treasury_balance: int
    active_participants: int
    symbol: str


class ChainReader:
    """Reads of the deployed contracts over one RPC connection.

    ``rpc``: the node's URL, or a connected :class:`Web3` to share (the SDK sends its transactions on
    the same one). ``enrollment_ttl``: seconds an "active" enrollment read is reused. Submissions read it
    on every request, and an RPC round trip is most of a submission's cost; a slash is then seen by the
    API within this delay (the worker marks the participant slashed in the database at once, which the API
    also checks). 0 reads the chain every time (the SDK, which reads rarely and must see its own stake).
    """

    def __init__(
        self,
        rpc: str | Web3,
        deployments: Deployments,
        timeout: float = 10.0,
        enrollment_ttl: float = 30.0,
    ) -> None:
        self.enrollment_ttl = enrollment_ttl
        self._enrollments: dict[str, tuple[float, Enrollment]] = {}
        self.w3 = (
            rpc
            if isinstance(rpc, Web3)
            else Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": timeout}))
        )
        self.deployments = deployments
        self.registry = deployments.contract(self.w3, "ParticipantRegistry")
        self.token = deployments.contract(self.w3, "RewardToken")
        self.parameters = deployments.contract(self.w3, "ProtocolParameters")
        self.ledger = deployments.contract(self.w3, "ContributionLedger")
        self.distributor = deployments.contract(self.w3, "RewardDistributor")
        # participantOf, read on every submission whose enrollment is not cached: encoded and decoded from
        # the ABI once here, sent as one eth_call (see participant()).
        entry = _participant_of_abi(self.registry)
        self._participant_selector = function_abi_to_4byte_selector(entry)  # type: ignore[arg-type]
        self._participant_inputs = get_abi_input_types(entry)  # type: ignore[arg-type]
        self._participant_outputs = get_abi_output_types(entry)  # type: ignore[arg-type]
        self._participant_components: list[dict[str, Any]] = entry["outputs"][0]["components"]

    def check(self) -> None:
        """:class:`DeploymentsError` unless the RPC serves the deployments' chain with the token deployed."""
        self.deployments.check_chain(self.w3)

    def enrollment(self, address: str, *, fresh: bool = False) -> Enrollment:
        """The participant's registry record (an "active" one cached for ``enrollment_ttl`` seconds).
        ``fresh=True`` reads the chain and leaves the cache alone (for rare calls, such as registration,
        that must neither see nor extend a stale "active")."""
        address = to_checksum_address(address)
        if fresh:
            return self._read_enrollment(address)
        cached = self._enrollments.get(address)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.enrollment_ttl:
            return cached[1]
        result = self._read_enrollment(address)
        # Only "active" is cached: an organization that just staked must be admitted at once.
        if result.status == RegistryStatus.active:
            self._enrollments[address] = (now, result)
        else:
            self._enrollments.pop(address, None)
        return result

    def _read_enrollment(self, address: str) -> Enrollment:
        p = self.participant(address)
        return Enrollment(p.status, p.stake, p.byzantine_count)

    def participant(self, address: str) -> ChainParticipant:
        """The registry's full record of ``address`` (not cached).

        One ``eth_call`` straight to the provider, encoded and decoded with the registry's ABI: web3's
        contract call costs three RPC requests here (its validation middleware asks the node for the chain
        id, twice) and ~5 ms of CPU, most of a submission's when the enrollment is not cached; this costs one
        request. The chain id was checked against the deployments when the reader was made (:meth:`check`).
        """
        data = self._participant_selector + abi_encode(
            self._participant_inputs, [to_checksum_address(address)]
        )
        response = self.w3.provider.make_request(
            RPCEndpoint("eth_call"), [{"to": self.registry.address, "data": "0x" + data.hex()}, "latest"]
        )
        if "error" in response or "result" not in response:
            error = response.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise Web3RPCError(f"participantOf({address}) failed: {message}", rpc_response=response)
        (record,) = abi_decode(self._participant_outputs, HexBytes(response["result"]))
        return ChainParticipant.from_fields(self._participant_components, record)

    def params(self) -> ProtocolParams:
        """The governed parameters, read now (checked against the contract's names)."""
        return read_params(self.parameters)

    def token_figures(self) -> TokenFigures:
        """Supply, stake, treasury and participant count, read now."""
        treasury = self.deployments.addresses["Timelock"]
        return TokenFigures(
            total_supply=int(self.token.functions.totalSupply().call()),
            total_staked=int(self.registry.functions.totalStaked().call()),
            treasury_balance=int(self.token.functions.balanceOf(treasury).call()),
            active_participants=int(self.registry.functions.activeCount().call()),
            symbol=self.symbol(),
        )

    def symbol(self) -> str:
        """The token's symbol."""
        return str(self.token.functions.symbol().call())

    def balance_of(self, address: str) -> int:
        """Token balance of ``address``, in token wei."""
        return int(self.token.functions.balanceOf(to_checksum_address(address)).call())

    def votes(self, address: str) -> int:
        """Current voting power of ``address`` (ERC-5805: only delegated tokens carry votes)."""
        return int(self.token.functions.getVotes(to_checksum_address(address)).call())

    def delegate_of(self, address: str) -> str | None:
        """Whom ``address`` delegated its votes to; None when it has not delegated."""
        delegate = str(self.token.functions.delegates(to_checksum_address(address)).call())
        return None if int(delegate, 16) == 0 else to_checksum_address(delegate)

    def allowance(self, owner: str, spender: str) -> int:
        """Token wei ``spender`` may still move from ``owner``'s balance."""
        return int(
            self.token.functions.allowance(to_checksum_address(owner), to_checksum_address(spender)).call()
        )

    def ether_balance(self, address: str) -> int:
        """Ether balance of ``address`` (what pays for gas), in wei."""
        return int(self.w3.eth.get_balance(to_checksum_address(address)))

    def model_hash_of(self, round_id: int) -> bytes:
        """The model hash the ledger records for a round (32 zero bytes when none is recorded)."""
        return bytes(self.ledger.functions.modelHashOf(round_id).call())

    def reward_root(self, round_id: int) -> bytes:
        """The Merkle root of a round's rewards (32 zero bytes before they are posted)."""
        return self.round_rewards(round_id).root

    def round_rewards(self, round_id: int) -> RoundRewards:
        """A round's rewards record: root, total, claimed so far, when claims open, whether cancelled."""
        root, total, claimed, claimable_at, cancelled = self.distributor.functions.roundRewards(
            int(round_id)
        ).call()
        return RoundRewards(bytes(root), int(total), int(claimed), int(claimable_at), bool(cancelled))

    def block_time(self) -> int:
        """The latest block's timestamp (unix seconds): the chain's clock, which claim windows are read on."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def next_block_time(self, clock: Callable[[], float] = time.time) -> int:
        """The time of the block a transaction sent now would land in (unix seconds), to judge claim windows.

        The later of the latest block's timestamp + 1 and ``clock``: a node that mined no block for a while
        has an old latest block, but a real chain's next block (and Hardhat's) is about now.
        """
        return max(self.block_time() + 1, int(clock()))

    def reward_status(
        self, round_id: int, address: str, now: int | None = None
    ) -> tuple[RewardStatus | None, RoundRewards]:
        """The status of ``address``'s reward in round ``round_id`` (see :func:`reward_status`) with the
        round's rewards record; ``now`` defaults to :meth:`next_block_time`."""
        record = self.round_rewards(round_id)
        claimed = self.claimed(round_id, address)
        return reward_status(record, claimed, self.next_block_time() if now is None else now), record

    def rewards_of(
        self, round_ids: Sequence[int], address: str
    ) -> tuple[dict[int, RecordedRewards], set[int]]:
        """The rewards records of ``round_ids`` and which of them ``address`` has claimed, from two event
        queries (``eth_getLogs``) whatever the number of rounds: the ledger's ``RoundRecorded`` and
        ``RewardsCancelled`` of those rounds, and the distributor's ``Claimed`` of those rounds by ``address``.

        Reading ``roundRewards`` and ``claimed`` per round cost ~6 RPC requests a round (1,207 for 201
        rounds): anyone could tie up the node and the API's threads with one call. A round absent from the
        first dict was not recorded on this chain.
        """
        if not round_ids:
            return {}, set()
        ids = [_topic(int(r)) for r in round_ids]
        recorded = _event_topic(self.ledger, "RoundRecorded")
        cancelled = _event_topic(self.ledger, "RewardsCancelled")
        ledger_logs = self._logs(self.ledger.address, [[recorded, cancelled], ids])
        claim_logs = self._logs(
            self.distributor.address, [_event_topic(self.distributor, "Claimed"), ids, _topic(address)]
        )
        records: dict[int, RecordedRewards] = {}
        cancelled_ids: set[int] = set()
        for log in ledger_logs:
            round_id = int.from_bytes(HexBytes(log["topics"][1]), "big")
            if HexBytes(log["topics"][0]) == HexBytes(cancelled):
                cancelled_ids.add(round_id)
                continue
            # RoundRecorded's data: modelHash, rewardsRoot, totalReward, claimableAt, auditHead, auditCount,
            # updatesHash (32 bytes each).
            _, root, total, at, _, _, _ = abi_decode(
                ["bytes32", "bytes32", "uint256", "uint256", "bytes32", "uint256", "bytes32"],
                HexBytes(log["data"]),
            )
            records[round_id] = RecordedRewards(bytes(root), int(total), int(at), False)
        for round_id in cancelled_ids & records.keys():
            r = records[round_id]
            records[round_id] = RecordedRewards(r.root, r.total, r.claimable_at, True)
        claimed = {int.from_bytes(HexBytes(log["topics"][1]), "big") for log in claim_logs}
        return records, claimed

    def _logs(self, address: str, topics: list[Any]) -> list[Any]:
        response = self.w3.provider.make_request(
            RPCEndpoint("eth_getLogs"),
            [
                {
                    "address": address,
                    "fromBlock": hex(self.deployments.deploy_block),
                    "toBlock": "latest",
                    "topics": topics,
                }
            ],
        )
        if "error" in response or "result" not in response:
            error = response.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise Web3RPCError(f"eth_getLogs failed: {message}", rpc_response=response)
        return list(response["result"])

    def claimed(self, round_id: int, address: str) -> bool:
        """Whether ``address`` has claimed its reward of round ``round_id``."""
        return bool(self.distributor.functions.claimed(int(round_id), to_checksum_address(address)).call())

    def audit_anchors(self) -> list[AuditAnchor]:
        """The audit log heads anchored by recorded rounds (from the ledger's events since deployment)."""
        return audit_anchors(self.ledger, self.deployments.deploy_block)


def _topic(value: int | str) -> str:
    """A 32-byte indexed topic: a uint256, or an address left-padded."""
    if isinstance(value, str):
        return "0x" + bytes.fromhex(to_checksum_address(value)[2:]).rjust(32, b"\0").hex()
    return "0x" + value.to_bytes(32, "big").hex()


def _event_topic(contract: Contract, name: str) -> str:
    entry = next(e for e in contract.abi if e.get("type") == "event" and e.get("name") == name)
    signature = f"{name}({','.join(str(i['type']) for i in entry['inputs'])})"  # type: ignore[typeddict-item]
    return "0x" + Web3.keccak(text=signature).hex().removeprefix("0x")
