"""A guardian reinstates an organization slashed on-chain (say by a stolen slasher key): it may submit again
at once, and the worker's upkeep mirrors its standing back into the database, once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aggregator.worker.gateway import ChainGateway
from aggregator.worker.upkeep import mirror_reinstatements
from db.models import AuditEntry, Participant, ParticipantStatus
from db.session import session_factory
from fedledger.chain.params import WAD
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import dev_private_key
from tests.worker.conftest import ORGS, Platform, address_of, login

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

GUARDIAN = 19  # the dev chain's guardian account (blockchain/scripts/deployLib.js)


def test_a_reinstated_organization_submits_again_and_is_mirrored_active(platform: Platform) -> None:
    settings = platform.settings
    sessions = session_factory(settings.resolved_database_url)
    gateway = ChainGateway(
        settings.chain_rpc_url, platform.deployments, settings.resolved_aggregator_key, sessions
    )
    victim = ORGS[0]
    address = address_of(victim)
    gateway.slash(9001, address, gateway.stake_of(address) // 20, "test")  # within the prompt share
    assert gateway.participant(address).status.name == "slashed"
    with sessions.begin() as session:  # what posting records after a slash
        session.scalars(
            select(Participant).where(Participant.address == address)
        ).one().status = ParticipantStatus.slashed
    round_ = platform.open_round(quorum=1, cohort=[victim])
    refused = platform.client.post(
        f"/v1/rounds/{round_['id']}/updates",
        content=b"x",
        headers={**login(platform.client, victim), "X-Update-Signature": "0x00"},
    )
    assert refused.status_code == 403 and refused.json()["error"] == "participant_slashed"
    # Nothing to mirror while the chain still says slashed.
    assert mirror_reinstatements(sessions, gateway) == []

    # The guardian undoes it; the organization first tops its stake back up to the minimum.
    registry = platform.deployments.contract(platform.w3, "ParticipantRegistry")
    token = platform.deployments.contract(platform.w3, "RewardToken")
    key = dev_private_key(victim)
    send_transaction(platform.w3, token.functions.approve(registry.address, 10 * WAD), key)
    send_transaction(platform.w3, registry.functions.addStake(10 * WAD), key)
    send_transaction(platform.w3, registry.functions.reinstate(address), dev_private_key(GUARDIAN))
    assert gateway.participant(address).status.name == "active"

    me = platform.client.get("/v1/participants/me", headers=login(platform.client, victim)).json()
    assert me["may_submit"] is True and me["reason"] is None, me
    platform.submit(victim, round_)  # accepted (202) before the mirror has run

    assert mirror_reinstatements(sessions, gateway) == [address]
    assert mirror_reinstatements(sessions, gateway) == []
    with sessions() as session:
        row = session.scalars(select(Participant).where(Participant.address == address)).one()
        assert row.status == ParticipantStatus.active
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "participant.reinstated")
        ).all()
        assert [e.subject for e in entries] == [address]
