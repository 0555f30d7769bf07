"""Python-built reward trees are accepted by the real RewardDistributor, once per account."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from eth_account import Account
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import BLOCKCHAIN_DIR
from fedledger.chain.ledger import (
    CONTRIBUTION_BYTES,
    LedgerContribution,
    LedgerFormatError,
    pack_contributions,
    record_round_call,
    unpack_contributions,
    updates_hash,
)
from fedledger.chain.merkle import MerkleError, RewardTree, leaf_hash, verify
from fedledger.chain.params import WAD
from fedledger.chain.tx import TransactionReverted, send_transaction
from fedledger.devkeys import AGGREGATOR_INDEX, FIRST_ORGANIZATION_INDEX, dev_private_key
from tests.chain.ledger import next_round_id

pytestmark = pytest.mark.chain


def _org(i: int) -> tuple[str, str]:
    key = dev_private_key(FIRST_ORGANIZATION_INDEX + i)
    return Account.from_key(key).address, key


def test_python_tree_equals_openzeppelin_js_tree() -> None:
    rewards = {Account.create().address: (i + 1) * WAD // 7 for i in range(9)}
    ours = RewardTree.build(42, rewards)
    values = [["42", a, str(v)] for a, v in rewards.items()]
    script = (
        "const {StandardMerkleTree}=require('@openzeppelin/merkle-tree');"
        f"const t=StandardMerkleTree.of({json.dumps(values)},['uint256','address','uint256']);"
        "console.log(t.root);"
    )
    js_root = subprocess.run(
        ["node", "-e", script], cwd=BLOCKCHAIN_DIR, capture_output=True, text=True, check=True
    )
    assert js_root.stdout.strip() == "0x" + ours.root.hex()
    for account in rewards:
        assert verify(ours.root, leaf_hash(42, account, rewards[account]), ours.proof(account))


def test_tree_refuses_bad_leaves() -> None:
    account = Account.create().address
    with pytest.raises(MerkleError, match="at least one leaf"):
        RewardTree.build(1, {})
    with pytest.raises(MerkleError, match="must be positive"):
        RewardTree.build(1, {account: 0})
    with pytest.raises(MerkleError, match="appears twice"):
        RewardTree.build(1, {account: 1, account.lower(): 2})
    with pytest.raises(MerkleError, match="has no reward"):
        RewardTree.build(1, {account: 1}).proof(Account.create().address)


def test_record_round_then_claim_with_a_python_proof(w3: Web3, deployments: Deployments) -> None:
    ledger = deployments.contract(w3, "ContributionLedger")
    distributor = deployments.contract(w3, "RewardDistributor")
    token = deployments.contract(w3, "RewardToken")
    aggregator_key = dev_private_key(AGGREGATOR_INDEX)
    orgs = [_org(i) for i in range(3)]
    rewards = {address: (i + 1) * 10 * WAD for i, (address, _) in enumerate(orgs)}
    round_id = next_round_id(w3, deployments)
    tree = RewardTree.build(round_id, rewards)
    model_hash = hashlib.sha256(b"model v7").digest()
    contributions = [
        LedgerContribution(address, hashlib.sha256(address.encode()).digest(), 8000, 9000, 9500, 8750, reward)
        for address, reward in rewards.items()
    ]
    call = record_round_call(ledger, round_id, model_hash, tree.root, contributions, b"\x07" * 32, 0)
    receipt = send_transaction(w3, call, aggregator_key)
    assert ledger.functions.isRecorded(round_id).call()
    assert ledger.functions.modelHashOf(round_id).call() == model_hash
    # The packed contributions decode back from the transaction's input; the event commits to the update hashes.
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    _, args = ledger.decode_function_input(tx["input"])
    assert unpack_contributions(args["contributions"]) == [
        (c.participant, c.quality, c.timeliness, c.honesty, c.fitness, c.reward) for c in contributions
    ]
    (event,) = ledger.events.RoundRecorded().process_receipt(receipt)
    assert event["args"]["updatesHash"] == updates_hash(contributions)
    assert event["args"]["totalReward"] == sum(rewards.values())

    with pytest.raises(TransactionReverted) as again:
        send_transaction(w3, call, aggregator_key)
    assert again.value.error == "RoundOutOfOrder"

    address, key = orgs[1]
    before = token.functions.balanceOf(address).call()
    # Anyone may relay a claim; the tokens go to the leaf's account.
    relayer_key = orgs[0][1]
    send_transaction(
        w3, distributor.functions.claim(round_id, address, rewards[address], tree.proof(address)), relayer_key
    )
    assert token.functions.balanceOf(address).call() - before == rewards[address]
    assert distributor.functions.claimed(round_id, address).call()

    with pytest.raises(TransactionReverted) as double:
        send_transaction(
            w3, distributor.functions.claim(round_id, address, rewards[address], tree.proof(address)), key
        )
    assert double.value.error == "AlreadyClaimed"

    other, other_key = orgs[2]
    with pytest.raises(TransactionReverted) as inflated:
        send_transaction(
            w3, distributor.functions.claim(round_id, other, rewards[other] + 1, tree.proof(other)), other_key
        )
    assert inflated.value.error == "InvalidProof"
    # A round that paid nothing: the ledger's refusal decodes from the distributor's ABI.
    with pytest.raises(TransactionReverted) as unknown:
        send_transaction(w3, distributor.functions.claim(round_id + 1, other, 1, []), other_key)
    assert unknown.value.error == "NoRewards"


def test_contributions_pack_and_refuse_what_the_ledger_would(w3: Web3) -> None:
    address = Account.create().address
    good = LedgerContribution(address, b"\x01" * 32, 0, 10_000, 5, 6, 2**96 - 1)
    packed = pack_contributions([good, good])
    assert len(packed) == 2 * CONTRIBUTION_BYTES
    assert unpack_contributions(packed) == [(address, 0, 10_000, 5, 6, 2**96 - 1)] * 2
    with pytest.raises(LedgerFormatError, match="scores must be 0..10000"):
        pack_contributions([LedgerContribution(address, b"\x01" * 32, 10_001, 0, 0, 0, 1)])
    with pytest.raises(LedgerFormatError, match="does not fit 96 bits"):
        pack_contributions([LedgerContribution(address, b"\x01" * 32, 0, 0, 0, 0, 2**96)])
    with pytest.raises(LedgerFormatError, match="update hash must be 32 bytes"):
        updates_hash([LedgerContribution(address, b"\x01", 0, 0, 0, 0, 1)])
    with pytest.raises(LedgerFormatError, match="not a multiple of 40"):
        unpack_contributions(packed[:-1])


def test_only_the_aggregator_records(w3: Web3, deployments: Deployments) -> None:
    ledger = deployments.contract(w3, "ContributionLedger")
    address, key = _org(5)
    contribution = [LedgerContribution(address, b"\x01" * 32, 0, 0, 0, 0, 0)]
    call = record_round_call(ledger, next_round_id(w3, deployments), b"\x02" * 32, b"\x00" * 32, contribution)
    with pytest.raises(TransactionReverted) as denied:
        send_transaction(w3, call, key)
    assert denied.value.error == "AccessControlUnauthorizedAccount"
