"""`fedledger client status` prints scores as people read them; its --json output keeps them exact."""

from __future__ import annotations

from app.commands.client import score_text


def test_a_reputation_prints_with_one_decimal() -> None:
    assert score_text(59.458436036958275) == "59.5"
    assert score_text(100) == "100.0"
    assert score_text(None) == "unknown"
