"""Read-only views of the chain the API and the dashboard need: enrollment, parameters, token figures."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum

from eth_utils import to_checksum_address
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.params import ProtocolParams, read_params


class RegistryStatus(IntEnum):
    # ParticipantRegistry.Status
    none = 0
    active = 1
    suspended = 2
    slashed = 3
    exited = 4


@dataclass(frozen=True)
class Enrollment:
    status: RegistryStatus
    stake: int
    byzantine_count: int


@dataclass(frozen=True)
class TokenFigures:
    total_supply: int
    total_staked: int
    treasury_balance: int
    active_participants: int
    symbol: str


class ChainReader:
    """``enrollment_ttl``: seconds an enrollment read is reused. Submissions read it on every request, and
    an RPC round trip is most of a submission's cost; a slash is then seen by the API within this delay
    (the worker marks the participant slashed in the database at once, which the API also checks)."""

    def __init__(
        self, rpc_url: str, deployments: Deployments, timeout: float = 10.0, enrollment_ttl: float = 30.0
    ) -> None:
        self.enrollment_ttl = enrollment_ttl
        self._enrollments: dict[str, tuple[float, Enrollment]] = {}
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self.deployments = deployments
        self.registry = deployments.contract(self.w3, "ParticipantRegistry")
        self.token = deployments.contract(self.w3, "RewardToken")
        self.parameters = deployments.contract(self.w3, "ProtocolParameters")
        self.ledger = deployments.contract(self.w3, "ContributionLedger")
        self.distributor = deployments.contract(self.w3, "RewardDistributor")

    def check(self) -> None:
        self.deployments.check_chain(self.w3)

    def enrollment(self, address: str) -> Enrollment:
        address = to_checksum_address(address)
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
        record = self.registry.functions.participantOf(address).call()
        # Participant struct: (status, stake, ..., byzantineCount ...) — read by ABI field names.
        fields = {item["name"]: value for item, value in zip(self._participant_abi(), record, strict=True)}
        return Enrollment(
            RegistryStatus(int(fields["status"])), int(fields["stake"]), int(fields.get("byzantineCount", 0))
        )

    def params(self) -> ProtocolParams:
        return read_params(self.parameters)

    def token_figures(self) -> TokenFigures:
        treasury = self.deployments.addresses["Timelock"]
        return TokenFigures(
            total_supply=int(self.token.functions.totalSupply().call()),
            total_staked=int(self.registry.functions.totalStaked().call()),
            treasury_balance=int(self.token.functions.balanceOf(treasury).call()),
            active_participants=int(self.registry.functions.activeCount().call()),
            symbol=str(self.token.functions.symbol().call()),
        )

    def balance_of(self, address: str) -> int:
        return int(self.token.functions.balanceOf(to_checksum_address(address)).call())

    def model_hash_of(self, round_id: int) -> bytes:
        return bytes(self.ledger.functions.modelHashOf(round_id).call())

    def _participant_abi(self) -> list[dict]:
        for entry in self.registry.abi:
            if entry.get("type") == "function" and entry.get("name") == "participantOf":
                return entry["outputs"][0]["components"]
        raise RuntimeError("ParticipantRegistry ABI lacks participantOf")
