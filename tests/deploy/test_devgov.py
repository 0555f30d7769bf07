"""On the dev chain `fedledger run` prepares, one wallet takes a proposal from propose to executed with its
own transactions only: blocks keep coming without transactions (interval mining), and the wallet holds
votes above quorum (spare dev accounts delegate to it). Timings as `fedledger run` deploys them, with a
faster block interval so the test takes about a minute."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from web3 import Web3

from app import devgov
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key
from visualization.governance import ProposalState, spec_by_name
from visualization.views.governance import _block_seconds

pytestmark = [pytest.mark.chain, pytest.mark.slow]

VOTER = FIRST_ORGANIZATION_INDEX


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Web3, Deployments]]:
    node = DevChain(port=free_port(), log_path=tmp_path / "chain.log")
    node.start()
    try:
        deployments = node.deploy(tmp_path / "deployments.json", env=devgov.DEV_TIMINGS)
        yield Web3(Web3.HTTPProvider(node.rpc_url)), deployments
    finally:
        node.stop()


def wait_for(governor, pid: int, state: ProposalState, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (current := governor.functions.state(pid).call()) != state:
        assert time.monotonic() < deadline, f"still {ProposalState(current).name}, expected {state.name}"
        time.sleep(0.25)


def test_one_wallet_takes_a_proposal_from_propose_to_executed_without_manual_mining(chain) -> None:  # type: ignore[no-untyped-def]
    w3, deployments = chain
    assert deployments.governance["votingPeriod"] == int(devgov.DEV_TIMINGS["FEDLEDGER_GOV_VOTING_PERIOD"])
    gov = devgov.prepare(
        w3, deployments, VOTER, devgov.donor_indices(FIRST_ORGANIZATION_INDEX + 8), block_seconds=0.4
    )
    assert gov.votes_wei >= gov.quorum_wei > 0
    key = dev_private_key(VOTER)
    governor = deployments.contract(w3, "FLGovernor")
    parameters = deployments.contract(w3, "ProtocolParameters")
    spec = spec_by_name("max_round_extensions")
    new_value = int(parameters.functions.get(spec.index).call()) + 1
    calldata = parameters.encode_abi("setParameter", args=[spec.index, new_value])
    targets, values, calldatas = [parameters.address], [0], [bytes.fromhex(calldata[2:])]
    description = "One more deadline extension (dev chain test)"
    send_transaction(w3, governor.functions.propose(targets, values, calldatas, description), key)
    pid = governor.functions.hashProposal(targets, values, calldatas, Web3.keccak(text=description)).call()

    # Nobody else sends a transaction: the interval-mined blocks open and close the vote.
    wait_for(governor, pid, ProposalState.Active, timeout=30)
    send_transaction(w3, governor.functions.castVote(pid, 1), key)
    period = deployments.governance["votingPeriod"] * 0.4
    wait_for(governor, pid, ProposalState.Succeeded, timeout=period + 60)
    send_transaction(
        w3, governor.functions.queue(targets, values, calldatas, Web3.keccak(text=description)), key
    )
    eta = governor.functions.proposalEta(pid).call()
    while w3.eth.get_block("latest")["timestamp"] < eta:
        time.sleep(0.5)
    send_transaction(
        w3, governor.functions.execute(targets, values, calldatas, Web3.keccak(text=description)), key
    )
    assert governor.functions.state(pid).call() == ProposalState.Executed
    assert parameters.functions.get(spec.index).call() == new_value
    # What README promises for the real interval: propose -> executed in a few minutes.
    assert (
        devgov.DevGovernance(gov.voter, 0, 0, devgov.BLOCK_SECONDS).minutes_to_execute(
            1, deployments.governance["votingPeriod"], deployments.governance["timelockDelay"]
        )
        < 3
    )

    # The Governance page tells how fast blocks come on an interval-mined chain (Hardhat's timestamps step
    # by whole seconds, so 0.4 s blocks read as 1 s).
    ctx = SimpleNamespace(chain=SimpleNamespace(w3=w3))
    pace = _block_seconds(ctx, w3.eth.block_number)  # type: ignore[arg-type]
    assert pace is not None and pace <= 2
