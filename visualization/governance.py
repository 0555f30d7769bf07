"""Governance proposals for the dashboard: read from FLGovernor, and calldata for the wallet to send.

Proposals are the ``ProposalCreated`` events since the deploy block; each one's live figures come from the
governor (``state``, ``proposalVotes``, ``proposalSnapshot``, ``proposalDeadline``, ``quorum``,
``hasVoted``). Calldata (propose, castVote, queue, execute, ``ProtocolParameters.setParameter``) is encoded
here with web3 and sent by the user's wallet: the dashboard never holds a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from fedledger.chain import param_table
from fedledger.chain.governance import ProposalState, VoteType
from fedledger.chain.param_table import Kind
from fedledger.chain.params import WAD
from visualization.data import Chain, encode_calldata

# --------------------------------------------------------------------------------- governed parameters

# Parameters that setParameter refuses (they change together through setFitnessWeights).
FITNESS_WEIGHTS = tuple(p.name for p in param_table.live() if p.setter == "setFitnessWeights")


@dataclass(frozen=True)
class ParamSpec:
    """One governed parameter: its index in ``ProtocolParameters.Param`` and how a person enters it."""

    index: int
    name: str
    kind: str  # "token" (tokens ↔ wei), "int", "wad" (real number ↔ 1e18 fixed point), "choice", "bool"
    choices: tuple[str, ...] = ()
    unit: str = ""  # the parameter table's unit ("seconds", "score 0–100", ...)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def to_raw(self, value: Any) -> int:
        """The uint256 that ``setParameter`` takes for a value in this parameter's human unit."""
        if self.kind == "choice":
            if isinstance(value, str):
                if value not in self.choices:
                    raise ValueError(f"{self.name} must be one of {list(self.choices)}")
                return self.choices.index(value)
            return _non_negative_int(value, self.name)
        if self.kind == "bool":
            if isinstance(value, str):
                return 1 if value.strip().lower() in ("1", "true", "yes", "on") else 0
            return 1 if value else 0
        if self.kind == "int":
            return _non_negative_int(value, self.name)
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError(f"{self.name}: {value!r} is not a number") from exc
        if number < 0:
            raise ValueError(f"{self.name} cannot be negative")
        raw = number * WAD
        if raw != raw.to_integral_value():
            raise ValueError(f"{self.name}: {value} has more than 18 decimals")
        return int(raw)

    def from_raw(self, raw: int, symbol: str = "") -> str:
        """A stored value in this parameter's human unit, as text."""
        if self.kind == "choice":
            return self.choices[raw] if 0 <= raw < len(self.choices) else str(raw)
        if self.kind == "bool":
            return "on" if raw else "off"
        if self.kind == "int":
            return str(raw)
        if self.kind == "token":
            return f"{_trim(Decimal(raw) / Decimal(WAD))} {symbol}".strip()
        return _trim(Decimal(raw) / Decimal(WAD))


def _non_negative_int(value: Any, name: str) -> int:
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{name}: {value!r} is not a number") from exc
    if number < 0 or number != number.to_integral_value():
        raise ValueError(f"{name} must be a whole number ≥ 0")
    return int(number)


def _trim(number: Decimal) -> str:
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# How a person enters each kind of the parameter table.
_ENTRY = {
    Kind.TOKEN: "token",
    Kind.REAL: "wad",
    Kind.SCORE: "wad",
    Kind.COUNT: "int",
    Kind.SECONDS: "int",
    Kind.BOOL: "bool",
    Kind.ENUM: "choice",
}


def parameter_specs() -> list[ParamSpec]:
    """Every live parameter of the parameter table, in ``ProtocolParameters.Param`` order."""
    return [ParamSpec(p.index, p.name, _ENTRY[p.kind], p.values, p.unit) for p in param_table.live()]


def settable_specs() -> list[ParamSpec]:
    """The parameters a proposal may change with ``setParameter``."""
    return [s for s in parameter_specs() if s.name not in FITNESS_WEIGHTS]


def spec_by_name(name: str) -> ParamSpec:
    for spec in parameter_specs():
        if spec.name == name:
            return spec
    raise KeyError(f"no governed parameter named {name!r}")


# ------------------------------------------------------------------------------------------ proposals


@dataclass(frozen=True)
class Action:
    target: str
    value: int
    calldata: str
    summary: str  # e.g. "ProtocolParameters.setParameter(strategy → median)"


@dataclass(frozen=True)
class Proposal:
    id: int
    proposer: str
    description: str
    actions: tuple[Action, ...]
    created_block: int
    state: ProposalState
    for_votes: int
    against_votes: int
    abstain_votes: int
    quorum: int
    snapshot: int
    deadline: int
    eta: int  # seconds since the epoch when queued, else 0
    has_voted: bool | None = None  # for the voter asked about; None when nobody was asked about
    voting_power: int | None = None  # the voter's votes at the snapshot (None before the snapshot)

    @property
    def title(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else f"Proposal {self.id}"

    @property
    def quorum_votes(self) -> int:
        # GovernorCountingSimple counts For and Abstain toward quorum.
        return self.for_votes + self.abstain_votes

    @property
    def targets(self) -> list[str]:
        return [a.target for a in self.actions]

    @property
    def values(self) -> list[int]:
        return [a.value for a in self.actions]

    @property
    def calldatas(self) -> list[str]:
        return [a.calldata for a in self.actions]

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)


@dataclass
class Governance:
    chain: Chain
    _names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.governor = self.chain.governor
        self.parameters = self.chain.reader.parameters
        self._names = {address: name for name, address in self.chain.deployments.addresses.items()}

    # --- reads ------------------------------------------------------------------------------------
    def clock(self) -> int:
        return int(self.governor.functions.clock().call())

    def voting_delay(self) -> int:
        return int(self.governor.functions.votingDelay().call())

    def voting_period(self) -> int:
        return int(self.governor.functions.votingPeriod().call())

    def proposal_threshold(self) -> int:
        return int(self.governor.functions.proposalThreshold().call())

    def proposals(self, voter: str | None = None) -> list[Proposal]:
        """Every proposal since the deploy, newest first, with its live state and tally."""
        events = self.governor.events.ProposalCreated.get_logs(from_block=self.chain.deployments.deploy_block)
        now = self.clock()
        voter = to_checksum_address(voter) if voter else None
        out = []
        for event in events:
            args = event["args"]
            pid = int(args["proposalId"])
            f = self.governor.functions
            against, for_, abstain = f.proposalVotes(pid).call()
            snapshot = int(f.proposalSnapshot(pid).call())
            # quorum() looks up past supply: for a proposal whose snapshot is still ahead, use the latest past point.
            timepoint = snapshot if snapshot < now else max(now - 1, 0)
            actions = tuple(
                Action(to_checksum_address(t), int(v), "0x" + bytes(c).hex(), self.describe_call(t, bytes(c)))
                for t, v, c in zip(args["targets"], args["values"], args["calldatas"], strict=True)
            )
            power = None
            if voter is not None and snapshot < now:
                power = int(f.getVotes(voter, snapshot).call())
            out.append(
                Proposal(
                    id=pid,
                    proposer=to_checksum_address(args["proposer"]),
                    description=str(args["description"]),
                    actions=actions,
                    created_block=int(event["blockNumber"]),
                    state=ProposalState(int(f.state(pid).call())),
                    for_votes=int(for_),
                    against_votes=int(against),
                    abstain_votes=int(abstain),
                    quorum=int(f.quorum(timepoint).call()),
                    snapshot=snapshot,
                    deadline=int(f.proposalDeadline(pid).call()),
                    eta=int(f.proposalEta(pid).call()),
                    has_voted=None if voter is None else bool(f.hasVoted(pid, voter).call()),
                    voting_power=power,
                )
            )
        out.sort(key=lambda p: p.created_block, reverse=True)
        return out

    def describe_call(self, target: str, calldata: bytes) -> str:
        """A readable summary of one proposal action (setParameter is decoded into the parameter's unit)."""
        target = to_checksum_address(target)
        name = self._names.get(target)
        if name is None:
            return f"call {target} with {len(calldata)} bytes"
        contract = self.chain.deployments.contract(self.chain.w3, name)
        try:
            function, args = contract.decode_function_input(calldata)
        except ValueError:
            return f"{name}: unknown call 0x{calldata[:4].hex()}"
        if name == "ProtocolParameters" and function.fn_name == "setParameter":
            specs = {s.index: s for s in parameter_specs()}
            index, raw = int(args["param"]), int(args["value"])
            if index in specs:
                spec = specs[index]
                return (
                    f"ProtocolParameters.setParameter({spec.name} → {spec.from_raw(raw, self.chain.symbol)})"
                )
        rendered = ", ".join(f"{k}={_short(v)}" for k, v in args.items())
        return f"{name}.{function.fn_name}({rendered})"

    def current_value(self, spec: ParamSpec) -> int:
        return int(self.parameters.functions.get(spec.index).call())

    # --- calldata ---------------------------------------------------------------------------------
    def set_parameter_calldata(self, spec: ParamSpec, raw_value: int) -> str:
        return encode_calldata(self.parameters, "setParameter", args=[spec.index, int(raw_value)])

    def propose_calldata(
        self, targets: list[str], values: list[int], calldatas: list[str], description: str
    ) -> str:
        return encode_calldata(
            self.governor,
            "propose",
            args=[
                [to_checksum_address(t) for t in targets],
                [int(v) for v in values],
                [_bytes(c) for c in calldatas],
                description,
            ],
        )

    def cast_vote_calldata(self, proposal_id: int, support: VoteType) -> str:
        return encode_calldata(self.governor, "castVote", args=[int(proposal_id), int(support)])

    def queue_calldata(self, proposal: Proposal) -> str:
        return encode_calldata(
            self.governor,
            "queue",
            args=[
                proposal.targets,
                proposal.values,
                [_bytes(c) for c in proposal.calldatas],
                proposal.description_hash,
            ],
        )

    def execute_calldata(self, proposal: Proposal) -> str:
        return encode_calldata(
            self.governor,
            "execute",
            args=[
                proposal.targets,
                proposal.values,
                [_bytes(c) for c in proposal.calldatas],
                proposal.description_hash,
            ],
        )

    @property
    def address(self) -> str:
        return self.governor.address


def proposal_id(targets: list[str], values: list[int], calldatas: list[str], description: str) -> int:
    """What ``FLGovernor.hashProposal`` returns (OpenZeppelin 5: keccak256 of the ABI-encoded proposal)."""
    encoded = encode(
        ["address[]", "uint256[]", "bytes[]", "bytes32"],
        [
            [to_checksum_address(t) for t in targets],
            [int(v) for v in values],
            [_bytes(c) for c in calldatas],
            keccak(text=description),
        ],
    )
    return int.from_bytes(keccak(encoded), "big")


def _bytes(data: str | bytes) -> bytes:
    return data if isinstance(data, bytes) else bytes.fromhex(data.removeprefix("0x"))


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()[:16] + ("…" if len(value) > 8 else "")
    return str(value)
