"""Issue 13.7: the audit log's head is anchored on-chain with each posted round, and ``GET /v1/audit/verify``
and ``fedledger audit verify`` check the log against it: a cut tail or a log rewritten with recomputed hashes is
found, although the hash chain alone would still verify.

A fresh deployment on the session node: the session's shared ledger carries other suites' anchors."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from typer.testing import CliRunner
from web3 import Web3

from app.cli import app as cli_app
from db.models import AuditEntry
from fedledger.chain.deployments import Deployments
from fedledger.chain.ledger import record_round_call
from fedledger.chain.merkle import RewardTree
from fedledger.chain.tx import send_transaction
from fedledger.config import Settings, get_settings
from fedledger.devkeys import AGGREGATOR_INDEX, dev_private_key
from fedledger.domain import audit
from fedledger.payload import encode_weights
from tests.chain.ledger import contributions_for
from tests.middleware.conftest import (  # noqa: F401 - fixtures used by this module
    MODEL,
    OPERATOR,
    address_of,
    client,
    database_url,
    login,
    settings,
)

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def fresh_deployment(dev_chain, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Deployments]:  # type: ignore[no-untyped-def]
    """One ledger per database: every anchor on a ledger belongs to the one log it checks."""
    out = tmp_path_factory.mktemp("anchored") / "deployments.json"
    return out, dev_chain[0].deploy(out)


@pytest.fixture
def deployments_file(fresh_deployment: tuple[Path, Deployments]) -> Path:
    """Overrides the session's deployments for this module's API (tests.middleware.conftest.settings)."""
    return fresh_deployment[0]


def _anchor_a_round(api: TestClient, w3: Web3, deployments: Deployments) -> tuple[str, int]:
    """A round recorded on-chain as posting records it: with the log's current head."""
    with api.app.state.fl.sessions() as session:
        head, count = audit.head(session)
    ledger = deployments.contract(w3, "ContributionLedger")
    round_id = int(ledger.functions.latestRoundId().call()) + 1
    rewards = {address_of(OPERATOR): 10**18}
    tree_model = hashlib.sha256(f"model {round_id}".encode()).digest()
    tree = RewardTree.build(round_id, rewards)
    call = record_round_call(
        ledger, round_id, tree_model, tree.root, contributions_for(rewards), bytes.fromhex(head), count
    )
    send_transaction(w3, call, dev_private_key(AGGREGATOR_INDEX))
    return head, count


def _rewrite_from(session, first_id: int) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with database access does: change entry ``first_id`` and recompute every hash after
    it, so that the hash chain verifies again."""
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    prev = audit.GENESIS_HASH
    for row in rows:
        if row.id == first_id:
            row.subject = "rewritten history"
            row.created_at = row.created_at + timedelta(seconds=1)
        row.prev_hash = prev
        row.entry_hash = audit.entry_hash(
            prev, row.created_at, row.actor, row.action, row.subject, row.details
        )
        prev = row.entry_hash
    session.flush()


def test_api_and_cli_verify_the_log_against_its_onchain_anchors(
    client: TestClient,  # noqa: F811
    settings: Settings,  # noqa: F811
    w3: Web3,
    fresh_deployment: tuple[Path, Deployments],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployments = fresh_deployment[1]
    operator = login(client, OPERATOR)
    assert client.post("/v1/models", content=encode_weights(MODEL), headers=operator).status_code == 201
    head, count = _anchor_a_round(client, w3, deployments)
    assert count >= 1
    # More entries after the anchor: covered by the hash chain until the next round anchors them.
    assert (
        client.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator).status_code
        == 201
    )

    ok = client.get("/v1/audit/verify", headers=operator).json()
    assert ok["ok"] and ok["anchors"] == 1 and ok["anchors_checked"] == 1, ok
    # Issue 21.10: what only the hash chain protects is reported, not folded into "ok".
    sessions = client.app.state.fl.sessions
    with sessions() as session:
        tail = session.scalars(select(AuditEntry.id).order_by(AuditEntry.id).offset(count)).all()
    assert tail and ok["unanchored_entries"] == len(tail) and ok["first_unanchored_id"] == tail[0], ok

    monkeypatch.setenv("FEDLEDGER_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("FEDLEDGER_CHAIN_RPC_URL", settings.chain_rpc_url)
    monkeypatch.setenv("FEDLEDGER_DEPLOYMENTS_FILE", str(fresh_deployment[0]))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        result = runner.invoke(cli_app, ["audit", "verify"])
        assert result.exit_code == 0, result.output
        assert "1 of 1 on-chain anchors matched" in result.output
        assert f"{len(tail)} entries after the last anchor (from id {tail[0]})" in result.output

        # 1. A log rewritten from its first entry with recomputed hashes: the hash chain verifies, the anchor not.
        with sessions.begin() as session:
            _rewrite_from(session, session.scalar(select(AuditEntry.id).order_by(AuditEntry.id).limit(1)))
            assert audit.verify_chain(session).ok  # what `audit verify` said before anchoring
        rewritten = client.get("/v1/audit/verify", headers=operator).json()
        assert not rewritten["ok"] and "rewritten" in rewritten["reason"], rewritten
        result = runner.invoke(cli_app, ["audit", "verify"])
        assert result.exit_code == 1 and "rewritten" in result.output
        assert runner.invoke(cli_app, ["audit", "verify", "--offline"]).exit_code == 0

        # 2. The tail cut just before the anchored entry (the rest consistent): the anchor finds it.
        with sessions.begin() as session:
            ids = session.scalars(select(AuditEntry.id).order_by(AuditEntry.id)).all()
            session.execute(delete(AuditEntry).where(AuditEntry.id >= ids[count - 1]))
            _rewrite_from(session, -1)
            assert audit.verify_chain(session).ok
        cut = client.get("/v1/audit/verify", headers=operator).json()
        assert not cut["ok"] and "entries were removed" in cut["reason"], cut
        assert cut["entries"] == count - 1
        result = runner.invoke(cli_app, ["audit", "verify"])
        assert result.exit_code == 1 and "entries were removed" in result.output
    finally:
        get_settings.cache_clear()
    assert head  # the anchored hash is what posting would have anchored


def test_an_entry_forged_after_the_last_anchor_is_reported_as_unanchored(
    client: TestClient,  # noqa: F811
    w3: Web3,
    fresh_deployment: tuple[Path, Deployments],
) -> None:
    """Issue 21.10, the attack: a writer of the database appends a forged entry (hashes recomputed) after the
    last anchor. Nothing can prove it false before the next anchor, and verify used to say just "ok"; it now
    names the unanchored tail the forgery sits in."""
    operator = login(client, OPERATOR)
    assert client.post("/v1/models", content=encode_weights(MODEL), headers=operator).status_code == 201
    _, count = _anchor_a_round(client, w3, deployments=fresh_deployment[1])
    assert client.get("/v1/audit/verify", headers=operator).json()["unanchored_entries"] == 0
    with client.app.state.fl.sessions.begin() as session:
        audit.append(session, "0x" + "ab" * 20, "model.rollback", "forged", {"by": "nobody"})
    with client.app.state.fl.sessions() as session:
        forged = session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    report = client.get("/v1/audit/verify", headers=operator).json()
    assert report["ok"] and report["entries"] == count + 1, report
    assert report["unanchored_entries"] == 1 and report["first_unanchored_id"] == forged, report
