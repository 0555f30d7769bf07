"""The spool on its own (pure file handling): what survives a crash, and what is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

from client.sealing import PreparedUpdate
from client.spool import Spool

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


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


def test_an_envelope_and_its_receipt_come_back_after_a_restart(tmp_path: Path) -> None:
    prepared = _prepared()
    Spool(tmp_path, ADDRESS, "http://api.example:8000").save(prepared)
    # A new process (a new Spool) for the same organization and API finds the same bytes.
    again = Spool(tmp_path, ADDRESS, "http://api.example:8000")
    assert again.load(7) == (prepared, None)
    again.save_receipt(7, {"receipt_id": "r1", "round_id": 7})
    assert again.load(7) == (prepared, {"receipt_id": "r1", "round_id": 7})
    # Another API (or another round) has nothing spooled.
    assert Spool(tmp_path, ADDRESS, "http://other:8000").load(7) == (None, None)
    assert again.load(8) == (None, None)


def test_a_damaged_envelope_is_not_resent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ADDRESS, "http://api.example:8000")
    spool.save(_prepared())
    (envelope,) = tmp_path.rglob("round-7.envelope")
    envelope.write_bytes(b"sealed bytez")  # no longer the bytes the signature covers
    assert spool.load(7) == (None, None)


def test_without_a_directory_nothing_is_kept(tmp_path: Path) -> None:
    spool = Spool(None, ADDRESS, "http://api.example:8000")
    spool.save(_prepared())
    spool.save_receipt(7, {"receipt_id": "r1"})
    assert spool.load(7) == (None, None)
    assert not any(tmp_path.iterdir())
