"""What a round found against an update: one code per kind of evidence, stored and served as that code.

The aggregator's scoring emits these codes, the worker stores them on the contribution (the human detail
in a separate field) and decides slashing on them, the API serves them as an enum, the dashboard and the
CLI show their labels. This module sits in the core so every one of them can import it.

A *conclusive* kind is something honest training never produces (a boosted norm, an update that failed
validation): with repeated detections it slashes on its own. The others need the reputation to fall too.

Adding a kind is one line below (code, conclusive, label), plus the scoring that emits it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Evidence(StrEnum):
    """One kind of evidence, by its stored code."""

    conclusive: bool
    label: str

    def __new__(cls, code: str, conclusive: bool, label: str) -> Evidence:  # noqa: D102 (the members)
        member = str.__new__(cls, code)
        member._value_ = code
        member.conclusive = conclusive
        member.label = label
        return member

    direction_outlier = (
        "direction_outlier",
        False,
        "points away from the server's reference update and harms the validation loss",
    )
    norm_outlier = ("norm_outlier", True, "norm far above the round's median norm")
    rejected_update = ("rejected_update", True, "failed decryption or validation")
    below_min_reputation = ("below_min_reputation", False, "reputation below the governed minimum")
    public_copy = ("public_copy", False, "the last public model change resent, not a local training result")
    # Secure aggregation (issue 24): evidence against the group's sum, never conclusive for one member.
    group_flagged = (
        "group_flagged",
        False,
        "its secure-aggregation group's sum was flagged (the server cannot tell which member)",
    )
    # No longer emitted (a claim above the cap only stops counting, issue 22); rounds recorded before keep it.
    sample_claim_above_cap = ("sample_claim_above_cap", False, "sample claim above the governed cap")


# Looked up by code rather than ``Evidence(code)``, whose signature is the three-field ``__new__``.
_BY_CODE: dict[str, Evidence] = {member.value: member for member in Evidence}


class UnknownEvidence(ValueError):
    """A stored or received evidence code that no :class:`Evidence` member has."""


@dataclass(frozen=True)
class Finding:
    """One piece of evidence against an update: its code and, apart from it, what was measured."""

    code: Evidence
    detail: str | None = None


def parse_codes(stored: Iterable[str] | None) -> tuple[Evidence, ...]:
    """The codes a contribution row holds; :class:`UnknownEvidence` for a code no member has."""
    out = []
    for code in stored or ():
        member = _BY_CODE.get(code)
        if member is None:
            raise UnknownEvidence(f"unknown evidence code {code!r} (known: {', '.join(_BY_CODE)})")
        out.append(member)
    return tuple(out)


def is_conclusive(codes: Iterable[Evidence]) -> bool:
    """Whether any of the codes is a conclusive kind (nothing honest training produces)."""
    return any(code.conclusive for code in codes)


def codes_of(findings: Iterable[Finding]) -> list[str]:
    """The findings' codes as stored (the contribution's ``evidence`` column)."""
    return [f.code.value for f in findings]


def details_of(findings: Iterable[Finding]) -> dict[str, str]:
    """The findings' details by code as stored (the contribution's ``evidence_detail`` column)."""
    return {f.code.value: f.detail for f in findings if f.detail}


def findings_from(codes: Iterable[str] | None, details: Mapping[str, str] | None) -> tuple[Finding, ...]:
    """A contribution row's findings back from its two columns."""
    details = details or {}
    return tuple(Finding(code, details.get(code.value)) for code in parse_codes(codes))


def in_words(served: Iterable[Mapping[str, Any]]) -> str:
    """Evidence entries as the API serves them (code, label, detail) in words for the dashboard and the
    CLI: each kind's label with what was measured, joined by "; " ("" for none). A code this version does
    not know (a newer server) shows as its code."""
    parts = []
    for entry in served:
        code = str(entry["code"])
        member = _BY_CODE.get(code)
        label = member.label if member is not None else str(entry.get("label") or code)
        parts.append(f"{label} ({entry['detail']})" if entry.get("detail") else label)
    return "; ".join(parts)
