"""Issue 21: the worker's beat executes queued slashes once their delay is over (skipping one a guardian
cancelled) and anchors the audit head between rounds, each once: a second run sends nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select
from web3 import Web3

from aggregator.worker.gateway import ChainGateway
from aggregator.worker.upkeep import anchor_audit_head, execute_due_slashes
from db.models import ChainTransaction
from db.session import session_factory
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import dev_private_key
from fedledger.domain import audit
from tests.worker.conftest import ORGS, Platform, WorkerProcess, address_of

pytestmark = [pytest.mark.celery, pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

GUARDIAN = 19  # the dev chain's guardian account (blockchain/scripts/deployLib.js)


def test_the_beat_executes_due_slashes_once_and_anchors_the_audit_head(
    platform: Platform, tmp_path: Path
) -> None:
    settings = platform.settings
    sessions = session_factory(settings.resolved_database_url)
    gateway = ChainGateway(
        settings.chain_rpc_url, platform.deployments, settings.resolved_aggregator_key, sessions
    )
    registry = gateway.registry
    ledger = gateway.ledger
    executed, cancelled = address_of(ORGS[8]), address_of(ORGS[9])
    for address in (executed, cancelled):
        stake = gateway.stake_of(address)
        assert stake > 0
        gateway.slash(9001, address, stake // 2, "test")  # above the prompt allowance: the rest is queued
        assert gateway.pending_slash(address)[0] > 0
    send_transaction(
        platform.w3,
        registry.functions.cancelSlashes([cancelled], Web3.keccak(text="test:stolen-key")),
        dev_private_key(GUARDIAN),
    )
    # Still in its window: nothing is due.
    assert execute_due_slashes(sessions, gateway) == {}
    delay = registry.functions.slashDelay().call()
    platform.w3.provider.make_request("evm_increaseTime", [delay + 1])
    platform.w3.provider.make_request("evm_mine", [])
    stake_before = gateway.stake_of(executed)
    with sessions.begin() as session:
        audit.append(session, "system", "test.between_rounds", "upkeep")
    with sessions() as session:
        head_hash, head_count = audit.head(session)

    worker = WorkerProcess(
        settings.model_copy(update={"slash_execute_seconds": 1.0, "audit_anchor_seconds": 1.0}),
        tmp_path / "upkeep-worker.log",
    )
    worker.start()
    try:
        deadline = time.monotonic() + 90
        anchors: list = []
        while time.monotonic() < deadline:
            anchors = ledger.events.AuditAnchored.get_logs(from_block=0)
            if gateway.pending_slash(executed)[0] == 0 and anchors:
                break
            time.sleep(0.5)
    finally:
        worker.stop()

    assert gateway.pending_slash(executed) == (0, 0), "the due slash was not executed; see the worker log"
    assert gateway.stake_of(executed) < stake_before
    assert [(bytes(a["args"]["auditHead"]).hex(), a["args"]["auditCount"]) for a in anchors] == [
        (head_hash, head_count)
    ]
    with sessions() as session:
        purposes = list(
            session.scalars(
                select(ChainTransaction.purpose).where(ChainTransaction.purpose.like("slash:execute:%"))
            )
        )
    assert len(purposes) == 1 and purposes[0].startswith(f"slash:execute:{executed}:"), purposes
    # A second run sends nothing: the slash is executed, the cancelled one skipped, the head anchored.
    block = platform.w3.eth.block_number
    assert execute_due_slashes(sessions, gateway) == {}
    assert anchor_audit_head(sessions, gateway) is None
    assert platform.w3.eth.block_number == block
