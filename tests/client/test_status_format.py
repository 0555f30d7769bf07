"""`fedledger client status` prints scores as people read them; its --json output keeps them exact."""

from __future__ import annotations

from app.commands.client import score_text


def test_a_reputation_prints_with_one_decimal() -> None:
    assert score_text(59.458436036958275) == "59.5"
    assert score_text(100) == "100.0"
    assert score_text(None) == "unknown"


def test_an_excluded_update_is_reported_with_its_reason(capsys) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 item 2: an update left out of the aggregate was reported as accepted and nothing more."""
    from app.commands.client import _print_submission

    summary = {
        "round_id": 6,
        "receipt_id": "r-1",
        "envelope_bytes": 10,
        "timings": {"total": 1.0},
        "round_status": "POSTED",
        "kept": False,
        "excluded_reason": "far from the server's reference update (cosine -0.42)",
        "evidence": [
            {"code": "direction_outlier", "label": "...", "detail": "cosine -0.420"},
            {"code": "below_min_reputation", "label": "...", "detail": None},
        ],
    }
    _print_submission(summary)
    out = capsys.readouterr().out
    assert "round 6 ended POSTED" in out
    assert "your update was excluded from the aggregate (not paid): far from the server's reference" in out
    # The codes in words, each with what was measured.
    assert (
        "evidence against it: points away from the server's reference update and harms the validation loss "
        "(cosine -0.420); reputation below the governed minimum"
    ) in out
    _print_submission({**summary, "kept": True, "fitness": 87.25, "reward_wei": "150500000000000000000"})
    assert "your update was kept: fitness 87.2, reward 150.5 tokens" in capsys.readouterr().out
