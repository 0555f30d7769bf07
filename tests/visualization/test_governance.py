"""The dashboard's governance reads and calldata, against the real FLGovernor on the session's dev chain."""

from __future__ import annotations

import uuid

import pytest
from eth_account import Account
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.governance import ProposalState, VoteType
from fedledger.chain.params import WAD
from tests.visualization.conftest import dashboard_account, mine
from visualization.data import Chain, fmt_amount, fmt_tokens
from visualization.governance import (
    Governance,
    parameter_specs,
    proposal_id,
    settable_specs,
    spec_by_name,
)
from visualization.reverts import explain

pytestmark = pytest.mark.chain


@pytest.fixture
def gov(dev_chain, deployments: Deployments) -> Governance:  # type: ignore[no-untyped-def]
    return Governance(Chain.connect(dev_chain[0].rpc_url, deployments))


def send(w3: Web3, key: str, tx: dict[str, str]) -> dict:
    """What a wallet does with an eth_sendTransaction request: fill gas and nonce, sign, send."""
    sender = Account.from_key(key).address
    call = {"from": sender, "to": tx["to"], "data": tx["data"], "value": 0}
    signed = Account.sign_transaction(
        {
            **call,
            "gas": w3.eth.estimate_gas(call) * 2,  # type: ignore[arg-type]
            "nonce": w3.eth.get_transaction_count(sender, "pending"),
            "chainId": int(tx["chainId"], 16),
            "gasPrice": w3.eth.gas_price,
        },
        key,
    )
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    assert receipt["status"] == 1
    return dict(receipt)


def test_parameter_specs_follow_the_contracts_names(gov: Governance) -> None:
    names = gov.parameters.functions.names().call()
    assert [s.name for s in parameter_specs()] == [n for n in names if not n.startswith("reserved_")]
    assert all(names[s.index] == s.name for s in parameter_specs())
    # Every parameter is shown with its unit (the emission cap as a token amount, not a bare number).
    labels = {s.name: s.label for s in parameter_specs()}
    assert labels["emission_cap_per_period"] == "emission_cap_per_period (tokens)"
    assert labels["dispute_window"] == "dispute_window (seconds)"
    assert labels["tier1_min_fitness"] == "tier1_min_fitness (score 0–100)"
    assert all(s.unit for s in parameter_specs())
    assert {"weight_quality", "weight_timeliness", "weight_honesty"}.isdisjoint(
        s.name for s in settable_specs()
    )
    for spec in parameter_specs():
        # Every stored value reads back into a human value that converts to the same uint256.
        raw = gov.current_value(spec)
        text = spec.from_raw(raw)
        value = spec.choices[raw] if spec.kind == "choice" else text == "on" if spec.kind == "bool" else text
        assert spec.to_raw(value) == raw, spec.name


def test_human_values_convert_exactly() -> None:
    assert spec_by_name("trim_fraction").to_raw("0.15") == 15 * WAD // 100
    assert spec_by_name("base_reward").to_raw("12.5") == 125 * WAD // 10
    assert spec_by_name("base_reward").from_raw(125 * WAD // 10, "DALLA") == "12.5 DALLA"
    assert spec_by_name("strategy").to_raw("krum") == 3
    assert spec_by_name("dp_enabled").to_raw(True) == 1
    assert spec_by_name("quorum").to_raw(7) == 7
    for bad, spec in (
        ("-1", "trim_fraction"),
        ("1.5", "quorum"),
        ("x", "dp_clip_norm"),
        ("nope", "strategy"),
        ("0." + "0" * 18 + "1", "dp_delta"),
    ):
        with pytest.raises(ValueError):
            spec_by_name(spec).to_raw(bad)
    assert fmt_tokens(1234567 * WAD // 100, "DALLA") == "12,345.67 DALLA"
    assert fmt_amount(1_000_000 * WAD) == "1,000,000" and fmt_amount(42 * WAD) == "42.00"


def test_a_proposal_the_wallet_sends_is_listed_voted_and_decoded(
    gov: Governance, w3: Web3, deployments: Deployments
) -> None:
    proposer, key = dashboard_account(15)
    spec = spec_by_name("max_round_extensions")
    raw = gov.current_value(spec) + 1
    description = f"More deadline extensions ({uuid.uuid4().hex[:8]})"
    calldata = gov.set_parameter_calldata(spec, raw)
    target = deployments.addresses["ProtocolParameters"]
    pid = proposal_id([target], [0], [calldata], description)
    assert (
        pid
        == gov.governor.functions.hashProposal(
            [target], [0], [bytes.fromhex(calldata[2:])], Web3.keccak(text=description)
        ).call()
    )

    data = gov.propose_calldata([target], [0], [calldata], description)
    assert gov.chain.simulate(proposer, gov.address, data) is None
    send(w3, key, gov.chain.tx_request(proposer, gov.address, data))
    # The same proposal again would revert: the dashboard says why before the wallet is asked.
    again = gov.chain.simulate(proposer, gov.address, data)
    assert again.startswith("GovernorUnexpectedProposalState")
    assert explain(again).startswith(
        "A proposal with exactly these actions and this description already exists"
    )
    assert "(it is Pending)" in explain(again)

    listed = {p.id: p for p in gov.proposals(proposer)}[pid]
    assert listed.state == ProposalState.Pending and listed.description == description
    assert listed.actions[0].summary == f"ProtocolParameters.setParameter(max_round_extensions → {raw})"
    assert listed.has_voted is False and listed.voting_power is None  # before the snapshot

    vote = gov.cast_vote_calldata(pid, VoteType.For)
    early = gov.chain.simulate(proposer, gov.address, vote)
    assert early.startswith("GovernorUnexpectedProposalState")
    assert explain(early) == (
        "The proposal is Pending; this needs it Active: voting opens once the voting delay has passed: "
        "come back in a few blocks."
    )
    mine(w3, 2)
    send(w3, key, gov.chain.tx_request(proposer, gov.address, vote))
    listed = {p.id: p for p in gov.proposals(proposer)}[pid]
    power = gov.governor.functions.getVotes(proposer, listed.snapshot).call()
    assert listed.state == ProposalState.Active and listed.has_voted is True
    assert (listed.for_votes, listed.against_votes, listed.abstain_votes) == (power, 0, 0)
    assert listed.voting_power == power > 0
    supply = gov.chain.reader.token.functions.getPastTotalSupply(listed.snapshot).call()
    assert listed.quorum == supply * 4 // 100
    assert listed.deadline == listed.snapshot + gov.voting_period()
    twice = gov.chain.simulate(proposer, gov.address, vote)
    assert twice.startswith("GovernorAlreadyCastVote")
    assert explain(twice) == "This wallet has already voted on this proposal."
