"""Governance from Python: propose a parameter change, vote, queue and execute through the timelock.

The same four steps any OpenZeppelin Governor tool performs; used by operators' scripts, tests and the
dashboard's server side (which encodes calldata for the user's wallet to send).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.tx import send_transaction


class ProposalState(IntEnum):
    """``IGovernor.ProposalState`` (OpenZeppelin 5), with the contract's names."""

    Pending = 0
    Active = 1
    Canceled = 2
    Defeated = 3
    Succeeded = 4
    Queued = 5
    Expired = 6
    Executed = 7


class VoteType(IntEnum):
    """``GovernorCountingSimple.VoteType``: the ``support`` argument of ``castVote``."""

    Against = 0
    For = 1
    Abstain = 2


@dataclass(frozen=True)
class ParameterProposal:
    """What ``propose``, ``queue`` and ``execute`` take: the Governor identifies a proposal by it."""

    targets: list[str]
    values: list[int]
    calldatas: list[bytes]
    description: str

    @property
    def description_hash(self) -> bytes:
        """keccak256 of the description: ``queue``, ``execute`` and ``hashProposal`` take it in its place."""
        return Web3.keccak(text=self.description)


def parameter_index(w3: Web3, deployments: Deployments, name: str) -> int:
    """The ``ProtocolParameters`` index of ``name``, read from the contract so no order is assumed here."""
    names = list(deployments.contract(w3, "ProtocolParameters").functions.names().call())
    if name not in names:
        raise ValueError(f"unknown governed parameter {name!r}; known: {', '.join(names)}")
    return names.index(name)


def parameter_change(
    w3: Web3, deployments: Deployments, name: str, value: int, description: str
) -> ParameterProposal:
    """A proposal calling ``ProtocolParameters.setParameter(name, value)``; ``value`` in raw uint256 units."""
    params = deployments.contract(w3, "ProtocolParameters")
    calldata = params.encode_abi("setParameter", args=[parameter_index(w3, deployments, name), value])
    return ParameterProposal([params.address], [0], [bytes.fromhex(calldata[2:])], description)


def proposal_id(w3: Web3, deployments: Deployments, proposal: ParameterProposal) -> int:
    """The Governor's id of ``proposal`` (``hashProposal``), which voting and ``state`` refer to."""
    governor = deployments.contract(w3, "FLGovernor")
    return int(
        governor.functions.hashProposal(
            proposal.targets, proposal.values, proposal.calldatas, proposal.description_hash
        ).call()
    )


def propose(w3: Web3, deployments: Deployments, key: str, proposal: ParameterProposal) -> int:
    """Submit ``proposal`` from ``key``'s account and return its id."""
    governor = deployments.contract(w3, "FLGovernor")
    send_transaction(
        w3,
        governor.functions.propose(
            proposal.targets, proposal.values, proposal.calldatas, proposal.description
        ),
        key,
    )
    return proposal_id(w3, deployments, proposal)


def vote(w3: Web3, deployments: Deployments, key: str, pid: int, support: VoteType) -> None:
    """Cast ``key``'s vote on proposal ``pid``, weighted by the account's delegated votes at the snapshot."""
    send_transaction(w3, deployments.contract(w3, "FLGovernor").functions.castVote(pid, int(support)), key)


def state(w3: Web3, deployments: Deployments, pid: int) -> ProposalState:
    """Where proposal ``pid`` stands in the Governor's lifecycle."""
    return ProposalState(deployments.contract(w3, "FLGovernor").functions.state(pid).call())


def queue(w3: Web3, deployments: Deployments, key: str, proposal: ParameterProposal) -> None:
    """Queue a succeeded proposal in the timelock, which starts its delay before it may execute."""
    governor = deployments.contract(w3, "FLGovernor")
    send_transaction(
        w3,
        governor.functions.queue(
            proposal.targets, proposal.values, proposal.calldatas, proposal.description_hash
        ),
        key,
    )


def execute(w3: Web3, deployments: Deployments, key: str, proposal: ParameterProposal) -> None:
    """Execute a queued proposal once the timelock's delay has passed: the parameter changes on-chain."""
    governor = deployments.contract(w3, "FLGovernor")
    send_transaction(
        w3,
        governor.functions.execute(
            proposal.targets, proposal.values, proposal.calldatas, proposal.description_hash
        ),
        key,
    )
