"""Evidence codes: one enum, conclusiveness by code, and the two stored columns read back."""

from __future__ import annotations

import pytest

from fedledger.evidence import (
    Evidence,
    Finding,
    UnknownEvidence,
    codes_of,
    details_of,
    findings_from,
    in_words,
    is_conclusive,
    parse_codes,
)


def test_only_what_honest_training_never_produces_is_conclusive() -> None:
    assert {e for e in Evidence if e.conclusive} == {Evidence.norm_outlier, Evidence.rejected_update}
    assert is_conclusive([Evidence.direction_outlier, Evidence.norm_outlier])
    assert is_conclusive([Evidence.rejected_update])
    # Pointing away is relative to the honest updates around it; a claim above the cap is a bound other
    # wallets move; a low reputation is not an act: none slashes on its own.
    assert not is_conclusive([Evidence.direction_outlier, Evidence.below_min_reputation])
    assert not is_conclusive([Evidence.sample_claim_above_cap]) and not is_conclusive([])


def test_every_code_is_its_own_name_with_a_label() -> None:
    for e in Evidence:
        assert e.value == e.name and e == e.name and e.label and " " not in e.value


def test_findings_are_stored_as_codes_and_details_and_read_back() -> None:
    findings = (
        Finding(Evidence.direction_outlier, "cosine -0.412"),
        Finding(Evidence.below_min_reputation),
    )
    codes, details = codes_of(findings), details_of(findings)
    assert codes == ["direction_outlier", "below_min_reputation"]
    assert details == {"direction_outlier": "cosine -0.412"}
    assert findings_from(codes, details) == findings
    assert findings_from(None, None) == ()


def test_an_unknown_or_prefixed_code_is_refused_by_name() -> None:
    with pytest.raises(UnknownEvidence, match="'norm_outlier: norm 41'"):
        parse_codes(["norm_outlier: norm 41"])
    with pytest.raises(UnknownEvidence, match="'reference_evidence'"):
        parse_codes(["reference_evidence"])
    assert parse_codes(["rejected_update"]) == (Evidence.rejected_update,)


def test_served_evidence_reads_as_words_and_a_newer_code_as_itself() -> None:
    served = [
        {"code": "norm_outlier", "label": "x", "detail": "norm 41.2"},
        {"code": "below_min_reputation", "label": "x", "detail": None},
        {"code": "from_a_newer_server", "label": "", "detail": "d"},
    ]
    assert in_words(served) == (
        "norm far above the round's median norm (norm 41.2); reputation below the governed minimum; "
        "from_a_newer_server (d)"
    )
    assert in_words([]) == ""
