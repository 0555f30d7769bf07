"""The secure-aggregation mode as the dashboard shows it (issue 24), from what the API serves: a round's mode
from its public parameter snapshot, its members' outcomes from the scored contributions (no I/O here, no
invented rows).

Under the mode the server scores, flags and pays each group's sum, and every member of a group gets the
group's scores, flag and a share of its reward (split by capped sample claims). The public view lists the
members' outcomes and each group's outcome (the API's public groups report: size, threshold, how many are in
its sum, unmasked or failed and why, kept or flagged, its reward; its members once the round is closed; never
its mean); a signed-in organization also sees its own group with its reward split (``GET
/v1/rounds/{id}/secagg``, signed in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fedledger.api.schemas import ContributionOut, SecAggGroupReportOut, SecAggGroupsOut
from fedledger.evidence import in_words
from fedledger.secagg.mode import RoundMode
from visualization.data import fmt_exact
from visualization.tables import MISSING, short

__all__ = ["GroupOutcome", "RoundMode", "group_outcome", "groups_table", "members_frame", "members_table"]


MEMBER_COLUMNS = ["organization", "participant", "kept", "flagged", "reward_wei", "why"]


def members_frame(
    contributions: Sequence[ContributionOut], names: Mapping[str, str], round_id: int
) -> pd.DataFrame:
    """One row per scored member of the round: kept, flagged, reward, and the evidence or the reason its
    group was not kept (a member's outcome is its group's)."""
    rows = [
        {
            "organization": names.get(c.participant.lower(), c.participant),
            "participant": c.participant,
            "kept": c.kept,
            "flagged": c.byzantine,
            "reward_wei": int(c.reward_wei),
            "why": in_words(e.model_dump(mode="json") for e in c.evidence) or c.excluded_reason or "",
        }
        for c in contributions
        if c.round_id == round_id
    ]
    frame = pd.DataFrame(rows, columns=MEMBER_COLUMNS)
    return frame.sort_values("organization").reset_index(drop=True)


def members_table(members: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """The members as people read them: short wallets, exact rewards, a dash for no evidence (and whether
    each is in its group's sum, for a group's own table)."""
    unit = f" ({symbol})" if symbol else ""
    columns = {
        "Organization": members["organization"],
        "Wallet": members["participant"].map(short),
    }
    if "in_sum" in members:
        columns["In the sum"] = members["in_sum"].map(lambda v: MISSING if v is None else _yes_no(v))
    columns |= {
        "Kept": members["kept"].map(_yes_no),
        "Flagged": members["flagged"].map(_yes_no),
        f"Reward{unit}": members["reward_wei"].map(fmt_exact),
        "Evidence or reason": members["why"].map(lambda v: v or MISSING),
    }
    return pd.DataFrame(columns)


def _yes_no(value: Any) -> str:
    return "yes" if value else "no"


@dataclass(frozen=True)
class GroupOutcome:
    """A member's own group: its members, threshold, and what the round did with each of them."""

    members: pd.DataFrame  # MEMBER_COLUMNS + "in_sum"
    threshold: int

    @property
    def in_sum(self) -> int:
        return sum(1 for v in self.members["in_sum"] if v is True)

    @property
    def left_out(self) -> int:
        return len(self.members) - self.in_sum

    @property
    def reward_wei(self) -> int:
        return int(self.members["reward_wei"].sum())


def group_outcome(
    group_members: Sequence[str],
    threshold: int,
    scored: pd.DataFrame,
    names: Mapping[str, str],
    unscored: str | None = None,
) -> GroupOutcome:
    """``group_members`` (the group as the API serves it to a member) joined with the round's scored
    members: a member with no score is not in the group's sum (it dropped out, or the group could not be
    unmasked), unless ``unscored`` says why nobody was scored (the group's sum was unmasked but the round
    failed): then whether each member is in the sum is not known here (None)."""
    by_address = {str(row["participant"]).lower(): row for row in scored.to_dict("records")}
    rows = []
    for address in group_members:
        row = by_address.get(address.lower())
        rows.append(
            {
                "organization": names.get(address.lower(), address),
                "participant": address,
                "kept": bool(row["kept"]) if row else False,
                "flagged": bool(row["flagged"]) if row else False,
                "reward_wei": int(row["reward_wei"]) if row else 0,
                "why": (row["why"] if row else unscored or "no update in the group's sum"),
                "in_sum": True if row else None if unscored else False,
            }
        )
    return GroupOutcome(pd.DataFrame(rows, columns=[*MEMBER_COLUMNS, "in_sum"]), threshold)


def groups_table(report: SecAggGroupsOut, names: Mapping[str, str], symbol: str) -> pd.DataFrame:
    """One row per group of a secure round, as the API's public report gives it: who (once the round is
    closed), threshold, how many are in its sum and left out of it, what became of it, and its reward."""
    unit = f" ({symbol})" if symbol else ""
    rows = [
        {
            "Group": g.index,
            "Members": _members_of(g, names),
            "Threshold": f"{g.threshold} of {g.size}",
            "In the sum": _count_or_dash(g.survivors),
            "Dropped": _count_or_dash(g.dropped),
            "Outcome": status_in_words(g),
            "Kept": MISSING if g.kept is None else _yes_no(g.kept),
            "Flagged": MISSING if g.flagged is None else _yes_no(g.flagged),
            f"Reward{unit}": fmt_exact(g.reward_wei),
        }
        for g in report.groups
    ]
    columns = ["Group", "Members", "Threshold", "In the sum", "Dropped", "Outcome", "Kept", "Flagged"]
    return pd.DataFrame(rows, columns=[*columns, f"Reward{unit}"])


def _members_of(group: SecAggGroupReportOut, names: Mapping[str, str]) -> str:
    if group.members is None:
        return "shown once the round is closed"
    return ", ".join(names.get(a.lower(), short(a)) for a in group.members)


def _count_or_dash(value: int | None) -> str:
    return MISSING if value is None else str(value)


def status_in_words(group: SecAggGroupReportOut) -> str:
    """What became of a group, in words: unmasked, failed or skipped with the reason, or pending."""
    if group.status == "failed":
        return f"failed: {group.failure_reason}" if group.failure_reason else "failed"
    if group.status == "skipped":
        ended = f": {group.failure_reason}" if group.failure_reason else ""
        return f"not unmasked, the round ended first{ended}"
    if group.status == "pending":
        return "pending: the round's close unmasks it"
    return "unmasked"
