"""Why a transaction would revert, said for a person: what the contract's custom error means and what to do.

:meth:`visualization.data.Chain.simulate` names the error as ``Name(arg, ...)``; :func:`explain` turns the
ones a dashboard user can meet into a sentence, and keeps the raw form for any other.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from fedledger.chain.governance import ProposalState

_CALL = re.compile(r"^(?P<name>\w+)(?P<args>\(.*\))?$", re.DOTALL)


def parse(reason: str) -> tuple[str, tuple[Any, ...]]:
    """``"Name(1, '0x..')"`` → ``("Name", (1, "0x.."))``; anything else → ``(reason, ())``."""
    match = _CALL.match(reason.strip())
    if not match:
        return reason, ()
    text = match.group("args")
    if not text:
        return match.group("name"), ()
    try:
        args = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return match.group("name"), ()
    return match.group("name"), args if isinstance(args, tuple) else (args,)


def _states(bitmap: Any) -> list[str]:
    """The proposal states set in a Governor ``expectedStates`` bitmap (bit i = ProposalState i)."""
    value = int(bitmap, 16) if isinstance(bitmap, str) else int(bitmap)
    return [state.name for state in ProposalState if value & (1 << state.value)]


_NEXT_STEP = {
    ProposalState.Pending: "voting opens once the voting delay has passed: come back in a few blocks",
    ProposalState.Active: "voting is still open: it can be queued after its deadline block if it passed",
    ProposalState.Canceled: "it was canceled",
    ProposalState.Defeated: "it did not pass (quorum not reached or more votes against)",
    ProposalState.Succeeded: "it passed: queue it in the timelock",
    ProposalState.Queued: "it waits in the timelock: execute it once the delay has passed",
    ProposalState.Expired: "it was queued but not executed in time",
    ProposalState.Executed: "it has already been executed",
}


def explain(reason: str) -> str:
    """A sentence saying what the revert means and what to do; the raw reason for errors not listed here."""
    name, args = parse(reason)
    try:
        if name == "GovernorUnexpectedProposalState" and len(args) == 3:
            current = ProposalState(int(args[1]))
            expected = _states(args[2])
            if not expected:
                return (
                    f"A proposal with exactly these actions and this description already exists "
                    f"(it is {current.name}). Change the description to make a new proposal, or find the "
                    "existing one in the list above."
                )
            return (
                f"The proposal is {current.name}; this needs it {' or '.join(expected)}: "
                f"{_NEXT_STEP[current]}."
            )
        if name == "GovernorAlreadyCastVote":
            return "This wallet has already voted on this proposal."
        if name == "GovernorInsufficientProposerVotes" and len(args) == 3:
            return (
                "Your voting power is below the proposal threshold: delegate your tokens to yourself "
                "(Token economics page) before proposing."
            )
        if name == "GovernorNonexistentProposal":
            return "No such proposal on this chain (the chain may have been restarted)."
        if name == "TimelockUnexpectedOperationState":
            return "The timelock does not allow this yet: wait until the delay has passed, then try again."
        if name == "AlreadyClaimed":
            return "This reward has already been claimed."
        if name == "InvalidProof":
            return "The reward proof does not match the round's posted root: reload the page and try again."
        if name == "StakeBelowMinimum":
            return "The stake is below the minimum the protocol requires."
        if name == "ERC20InsufficientBalance":
            return "Not enough tokens in this wallet."
        if name == "UseSetFitnessWeights":
            return "The fitness weights change together: propose them with setFitnessWeights."
        if name == "InvalidParameter" and len(args) == 4:
            return f"The contract refuses this value: it must lie between {args[2]} and {args[3]} (on-chain units)."
        if name == "ReservedParameter":
            return "This parameter slot is retired: nothing reads it, so it cannot be set."
    except (ValueError, TypeError, KeyError):
        pass
    return f"The contract would refuse this transaction: {reason}"
