"""Issue 13.1 end to end: an organization that submits poisoned updates and asks to leave before the round is
posted is still slashed by the worker's posting (it is no longer Active), and its stake stays locked until a
round after its exit request is recorded."""

from __future__ import annotations

import pytest

from fedledger.chain.reader import ChainParticipant, RegistryStatus
from fedledger.chain.tx import TransactionReverted, send_transaction
from fedledger.devkeys import dev_private_key
from tests.worker.conftest import ORGS, Platform, address_of

pytestmark = [pytest.mark.celery, pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

UNBONDING = 3 * 24 * 3600


def test_an_organization_that_exits_before_posting_is_slashed_and_stays_locked(
    platform: Platform, worker
) -> None:  # type: ignore[no-untyped-def]
    registry = platform.deployments.contract(platform.w3, "ParticipantRegistry")
    attacker, honest = ORGS[5], ORGS[6:10]
    key = dev_private_key(attacker)
    stake_before = registry.functions.stakeOf(address_of(attacker)).call()
    rounds = 1  # conclusive evidence (a 100x norm) slashes in the round it is found (issue 21.7)
    for r in range(rounds):
        round_ = platform.open_round(quorum=5, cohort=[attacker, *honest])
        for index in honest[:3]:
            platform.submit(index, round_, seed=r)
        platform.submit(attacker, round_, attack="scaling", seed=r)
        if r == rounds - 1:
            # The round that will slash it: having submitted, it asks to leave before the round is posted.
            send_transaction(platform.w3, registry.functions.requestExit(), key)
            record = ChainParticipant.from_record(
                registry, registry.functions.participantOf(address_of(attacker)).call()
            )
            assert record.status == RegistryStatus.exited and record.unlock_round == round_["id"]
            slashes_before_exit = record.slash_count
            # Unbonding over, round not posted: the stake cannot leave, whatever the timing (RoundsPending).
            platform.w3.provider.make_request("evm_increaseTime", [UNBONDING + 1])
            with pytest.raises(TransactionReverted) as locked:
                send_transaction(platform.w3, registry.functions.withdraw(), key)
            assert locked.value.error == "RoundsPending"
        platform.submit(honest[3], round_, seed=r)  # the quorum: the round closes and is posted
        assert platform.wait_for(round_["id"], {"POSTED", "FAILED"})["status"] == "POSTED"

    after = ChainParticipant.from_record(
        registry, registry.functions.participantOf(address_of(attacker)).call()
    )
    assert after.status == RegistryStatus.exited  # slashed while exiting: it stays Exited
    assert after.slash_count == slashes_before_exit + 1 and after.stake < stake_before
    # Marked for the round although it was no longer Active: its exit waited for this round's record.
    assert after.last_round == round_["id"], after
    slashed = [e["args"]["participant"] for e in registry.events.Slashed.get_logs(from_block=0)]
    assert address_of(attacker) in slashed
    # The round it submitted to is recorded (its slash first): what is left may now leave.
    send_transaction(platform.w3, registry.functions.withdraw(), key)
    assert registry.functions.stakeOf(address_of(attacker)).call() == 0


def test_a_wallet_flagged_with_conclusive_evidence_does_not_leave_with_its_whole_stake(
    platform: Platform, worker
) -> None:  # type: ignore[no-untyped-def]
    """Issue 21.7, the attack: conclusive evidence (a 100x scaled update) in fewer rounds than the count of
    three, then an exit. Slashing waited for the count, so the wallet withdrew 100 % of its stake and could
    come back as a fresh wallet. The round with conclusive evidence slashes it now, before its exit unlocks."""
    registry = platform.deployments.contract(platform.w3, "ParticipantRegistry")
    attacker, honest = ORGS[5], ORGS[6:10]
    key = dev_private_key(attacker)
    stake_before = registry.functions.stakeOf(address_of(attacker)).call()
    round_ = platform.open_round(quorum=5, cohort=[attacker, *honest])
    for index in honest[:3]:
        platform.submit(index, round_, seed=0)
    platform.submit(attacker, round_, attack="scaling", seed=0)
    send_transaction(platform.w3, registry.functions.requestExit(), key)
    platform.w3.provider.make_request("evm_increaseTime", [UNBONDING + 1])
    platform.submit(honest[3], round_, seed=0)
    assert platform.wait_for(round_["id"], {"POSTED", "FAILED"})["status"] == "POSTED"

    record = ChainParticipant.from_record(
        registry, registry.functions.participantOf(address_of(attacker)).call()
    )
    assert record.byzantine_count == 1 and record.slash_count == 1, record
    token = platform.deployments.contract(platform.w3, "RewardToken")
    balance = token.functions.balanceOf(address_of(attacker)).call()
    send_transaction(platform.w3, registry.functions.withdraw(), key)
    returned = token.functions.balanceOf(address_of(attacker)).call() - balance
    assert 0 < returned < stake_before, (returned, stake_before)
