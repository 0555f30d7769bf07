"""The spool on its own (pure file handling): what survives a crash, and what is refused."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from client.sealing import PreparedUpdate
from client.spool import Spool, round_scope
from fedledger.api.schemas import ReceiptOut, RoundOut
from fedledger.chain.deployments import ChainIdentity, Deployments

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SCOPE = "deployment-a-round-7"


def _prepared(round_id: int = 7, envelope: bytes = b"sealed bytes") -> PreparedUpdate:
    return PreparedUpdate(
        round_id=round_id,
        model_version=3,
        num_samples=120,
        envelope=envelope,
        signature="0x" + "ab" * 65,
        payload_hash="0x" + hashlib.sha256(envelope).hexdigest(),
        key_id="k1",
        plaintext_bytes=99,
    )


def _receipt(prepared: PreparedUpdate) -> ReceiptOut:
    return ReceiptOut(
        receipt_id="r1",
        round_id=prepared.round_id,
        participant=ADDRESS,
        payload_hash=prepared.payload_hash,
        num_samples=prepared.num_samples,
        received_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        replayed=False,
    )


def _round(round_id: int, opened_at: str) -> RoundOut:
    return RoundOut.model_validate(
        {
            "id": round_id,
            "status": "OPEN",
            "model_version": 3,
            "opened_at": opened_at,
            "deadline": "2026-12-01T12:00:00Z",
            "quorum": 3,
            "min_participants": 2,
            "strategy": "trimmed_mean",
            "submissions": 0,
            "extensions": 0,
            "closed_at": None,
            "failure_reason": None,
            "params": {},
        }
    )


def test_an_envelope_and_its_receipt_come_back_after_a_restart(tmp_path: Path) -> None:
    prepared = _prepared()
    Spool(tmp_path, ADDRESS, "http://api.example:8000").save(prepared, SCOPE)
    # A new process (a new Spool) for the same organization, API and round scope finds the same bytes.
    again = Spool(tmp_path, ADDRESS, "http://api.example:8000")
    assert again.load(7, SCOPE) == (prepared, None)
    again.save_receipt(prepared, _receipt(prepared), SCOPE)
    assert again.load(7, SCOPE) == (prepared, _receipt(prepared))
    # Another API, another round, or the same round id of another deployment has nothing spooled.
    assert Spool(tmp_path, ADDRESS, "http://other:8000").load(7, SCOPE) == (None, None)
    assert again.load(8, SCOPE) == (None, None)
    assert again.load(7, "deployment-b-round-7") == (None, None)


def test_a_receipt_comes_back_only_with_the_envelope_it_answers(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ADDRESS, "http://api.example:8000")
    first = _prepared()
    spool.save(first, SCOPE)
    spool.save_receipt(first, _receipt(first).model_copy(update={"payload_hash": "0x" + "00" * 32}), SCOPE)
    assert spool.load(7, SCOPE) == (first, None)  # a receipt for another update is not this one's
    spool.save_receipt(first, _receipt(first), SCOPE)
    # A new envelope for the round (resealed for a new key) drops the old envelope's receipt.
    second = _prepared(envelope=b"resealed bytes")
    spool.save(second, SCOPE)
    assert spool.load(7, SCOPE) == (second, None)
    spool.discard(7, SCOPE)
    assert spool.load(7, SCOPE) == (None, None)


def test_the_scope_tells_apart_deployments_and_reopened_round_ids() -> None:
    addresses = {"ContributionLedger": "0x" + "11" * 20, "RewardToken": "0x" + "22" * 20}
    one = Deployments(chain_id=31337, deploy_block=1, addresses=addresses, abis={})
    moved = Deployments(
        chain_id=31337, deploy_block=1, addresses={**addresses, "RewardToken": "0x" + "33" * 20}, abis={}
    )
    round_ = _round(6, "2026-12-01T10:00:00Z")
    assert round_scope(one, round_) == round_scope(one, round_.model_copy())
    assert round_scope(one, round_) != round_scope(moved, round_)
    # A fresh dev chain deploys to the same addresses and numbers rounds from 1 again: the opening differs.
    assert round_scope(one, round_) != round_scope(one, _round(6, "2026-12-01T11:00:00Z"))
    assert round_scope(one, round_) != round_scope(one, _round(7, "2026-12-01T10:00:00Z"))


def test_a_damaged_envelope_is_not_resent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ADDRESS, "http://api.example:8000")
    spool.save(_prepared(), SCOPE)
    (envelope,) = tmp_path.rglob("round-7.envelope")
    envelope.write_bytes(b"sealed bytez")  # no longer the bytes the signature covers
    assert spool.load(7, SCOPE) == (None, None)


def test_without_a_directory_nothing_is_kept(tmp_path: Path) -> None:
    spool = Spool(None, ADDRESS, "http://api.example:8000")
    prepared = _prepared()
    spool.save(prepared, SCOPE)
    spool.save_receipt(prepared, _receipt(prepared), SCOPE)
    assert spool.load(7, SCOPE) == (None, None)
    assert not any(tmp_path.iterdir())


def test_the_scope_tells_apart_a_redeployed_dev_chain() -> None:
    """A restarted dev node redeployed by the same account: same id, addresses, deploy block number."""
    deployments = Deployments(chain_id=31337, deploy_block=1, addresses={"A": "0x" + "11" * 20}, abis={})
    round_ = _round(1, "2026-12-01T10:00:00Z")
    first = ChainIdentity("0x" + "aa" * 32, "0x" + "bb" * 32)
    again = ChainIdentity("0x" + "aa" * 32, "0x" + "cc" * 32)
    assert round_scope(deployments, round_, first) != round_scope(deployments, round_, again)


def test_a_damaged_receipt_is_forgotten_and_the_same_envelope_resent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ADDRESS, "http://api.example:8000")
    prepared = _prepared()
    spool.save(prepared, SCOPE)
    spool.save_receipt(prepared, _receipt(prepared), SCOPE)
    (receipt,) = tmp_path.rglob("round-7.receipt.json")
    receipt.write_text('{"receipt_id": "r1"')  # cut short by a crash mid-write
    assert spool.load(7, SCOPE) == (prepared, None)
