"""The chain reader's lean participantOf read (one eth_call, ABI-decoded) returns what web3's contract call
returns, for every dev account whatever its registry status."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.chain.reader import ChainParticipant, ChainReader, RegistryStatus
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import dev_private_key

pytestmark = pytest.mark.chain


def test_participant_matches_the_contract_call(w3: Web3, deployments: Deployments) -> None:
    reader = ChainReader(w3.provider.endpoint_uri, deployments)  # type: ignore[attr-defined]
    registry = deployments.contract(w3, "ParticipantRegistry")
    # An enrolled record too (dev account 3 is one the middleware tests enroll as well).
    key = dev_private_key(3)
    record = registry.functions.participantOf(Account.from_key(key).address).call()
    if ChainParticipant.from_record(registry, record).status == RegistryStatus.none:
        token = deployments.contract(w3, "RewardToken")
        send_transaction(w3, token.functions.approve(registry.address, 100 * WAD), key)
        send_transaction(w3, registry.functions.enroll(100 * WAD), key)
    addresses = [Account.from_key(dev_private_key(i)).address for i in range(20)]
    addresses.append("0x" + "00" * 19 + "01")  # never enrolled
    statuses = set()
    for address in addresses:
        expected = ChainParticipant.from_record(registry, registry.functions.participantOf(address).call())
        assert reader.participant(address) == expected
        assert reader.participant(address.lower()) == expected
        assert reader.enrollment(address, fresh=True).status == expected.status
        statuses.add(expected.status)
    assert {RegistryStatus.none, RegistryStatus.active} <= statuses
