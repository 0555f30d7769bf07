"""The API's JSON shaped into pandas frames for tables and charts (no I/O here, no invented rows)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedledger.api.schemas import ContributionOut, ParticipantOut, RoundStatsOut
from fedledger.evidence import in_words
from visualization.data import fmt_exact, tokens

ROUND_COLUMNS = [
    "round",
    "status",
    "strategy",
    "opened_at",
    "deadline",
    "model_version",
    "aggregated",
    "kept",
    "excluded",
    "rejected",
    "rolled_back",
    "loss_before",
    "loss_after",
    "accuracy",
    "epsilon_spent",
    "reward",
    "reward_wei",
    "failure_reason",
]

CONTRIBUTION_COLUMNS = [
    "round",
    "organization",
    "participant",
    "quality",
    "timeliness",
    "honesty",
    "fitness",
    "kept",
    "byzantine",
    "reward",
    "reward_wei",
    "reputation_after",
    "evidence",
]


def rounds_frame(rounds: list[RoundStatsOut]) -> pd.DataFrame:
    """One row per round, oldest first, with its aggregation's figures (NaN where the round has none)."""
    rows = []
    for r in rounds:
        a = r.aggregation
        rows.append(
            {
                "round": r.id,
                "status": r.status,
                "strategy": r.strategy,
                "opened_at": pd.to_datetime(r.opened_at, utc=True),
                "deadline": pd.to_datetime(r.deadline, utc=True),
                "model_version": r.model_version,
                "aggregated": a is not None,
                "kept": a.kept if a else None,
                "excluded": a.excluded if a else None,
                "rejected": a.rejected if a else None,
                "rolled_back": a.rolled_back if a else None,
                "loss_before": a.holdout_loss_before if a else None,
                "loss_after": a.holdout_loss_after if a else None,
                "accuracy": a.holdout_accuracy if a else None,
                # A secure round that failed after unmasking groups is charged too (no aggregation).
                "epsilon_spent": r.epsilon_spent
                if r.epsilon_spent is not None
                else a.epsilon_spent
                if a
                else None,
                "reward": tokens(a.total_reward_wei) if a else None,
                "reward_wei": a.total_reward_wei if a else None,
                # Only a FAILED round failed: an older close kept its deadline extension's note here.
                "failure_reason": r.failure_reason if r.status == "FAILED" else None,
            }
        )
    frame = pd.DataFrame(rows, columns=ROUND_COLUMNS)
    for column in ("loss_before", "loss_after", "accuracy", "epsilon_spent", "reward"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values("round").reset_index(drop=True)


def organizations(participants: list[ParticipantOut]) -> dict[str, str]:
    """Address (lower case) → organization name."""
    return {p.address.lower(): p.org_name for p in participants}


def contributions_frame(
    contributions: list[ContributionOut], participants: list[ParticipantOut]
) -> pd.DataFrame:
    names = organizations(participants)
    rows = [
        {
            "round": c.round_id,
            "organization": names.get(c.participant.lower(), c.participant),
            "participant": c.participant,
            "quality": c.quality,
            "timeliness": c.timeliness,
            "honesty": c.honesty,
            "fitness": c.fitness,
            "kept": c.kept,
            "byzantine": c.byzantine,
            "reward": tokens(c.reward_wei),
            "reward_wei": c.reward_wei,
            "reputation_after": c.reputation_after,
            "evidence": in_words(e.model_dump(mode="json") for e in c.evidence) or "-",
        }
        for c in contributions
    ]
    frame = pd.DataFrame(rows, columns=CONTRIBUTION_COLUMNS)
    return frame.sort_values(["round", "organization"], ascending=[False, True]).reset_index(drop=True)


def filter_contributions(
    frame: pd.DataFrame,
    rounds: list[int] | None = None,
    organizations: list[str] | None = None,
    fitness: tuple[float, float] = (0.0, 100.0),
    kept_only: bool = False,
) -> pd.DataFrame:
    out = frame
    if rounds:
        out = out[out["round"].isin(rounds)]
    if organizations:
        out = out[out["organization"].isin(organizations)]
    out = out[(out["fitness"] >= fitness[0]) & (out["fitness"] <= fitness[1])]
    if kept_only:
        out = out[out["kept"]]
    return out.reset_index(drop=True)


def participants_frame(participants: list[ParticipantOut]) -> pd.DataFrame:
    columns = [
        "organization",
        "address",
        "status",
        "reputation",
        "byzantine_count",
        "created_at",
        "last_seen_at",
    ]
    rows = [
        {
            "organization": p.org_name,
            "address": p.address,
            "status": p.status,
            "reputation": p.reputation,
            "byzantine_count": p.byzantine_count,
            "created_at": pd.to_datetime(p.created_at, utc=True),
            "last_seen_at": pd.to_datetime(p.last_seen_at, utc=True),
        }
        for p in participants
    ]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------ tables as people read them

MISSING = "—"


def _count(value: Any) -> str:
    return MISSING if pd.isna(value) else f"{int(value):,}"


def _number(value: Any, spec: str) -> str:
    return MISSING if pd.isna(value) else format(float(value), spec)


def _time(series: pd.Series) -> pd.Series:
    return series.dt.strftime("%Y-%m-%d %H:%M:%S").fillna(MISSING)


def _yes_no(value: Any) -> str:
    return MISSING if value is None or pd.isna(value) else ("yes" if value else "no")


def rounds_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """The rounds as a table: newest first, human headers, figures formatted, a dash where a round has none."""
    view = rounds.sort_values("round", ascending=False)
    return pd.DataFrame(
        {
            "Round": view["round"],
            "Status": view["status"].fillna(MISSING),
            "Strategy": view["strategy"].fillna(MISSING),
            "Opened (UTC)": _time(view["opened_at"]),
            "Kept": view["kept"].map(_count),
            "Excluded": view["excluded"].map(_count),
            "Rejected": view["rejected"].map(_count),
            "Accuracy": view["accuracy"].map(lambda v: _number(v, ".1%")),
            "Holdout loss": view["loss_after"].map(lambda v: _number(v, ".4f")),
            "ε spent": view["epsilon_spent"].map(lambda v: _number(v, ".3g")),
            "Rolled back": view["rolled_back"].map(_yes_no),
            "Why it failed": view["failure_reason"].fillna(""),
        }
    ).reset_index(drop=True)


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if address else MISSING


def participants_table(participants: pd.DataFrame) -> pd.DataFrame:
    """Organizations as a table that fits a laptop screen: short wallet, minutes-precision times."""
    return pd.DataFrame(
        {
            "Organization": participants["organization"],
            "Wallet": participants["address"].map(short),
            "Status": participants["status"],
            "Reputation": participants["reputation"].astype(float),
            "Times excluded": participants["byzantine_count"].fillna(0).astype(int),
            "Registered (UTC)": participants["created_at"].dt.strftime("%Y-%m-%d %H:%M").fillna(MISSING),
            "Last seen (UTC)": participants["last_seen_at"].dt.strftime("%Y-%m-%d %H:%M").fillna(MISSING),
        }
    )


def contributions_table(contributions: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Scored updates as a table: human headers, short wallets, no empty cells."""
    unit = f" ({symbol})" if symbol else ""
    return pd.DataFrame(
        {
            "Round": contributions["round"],
            "Organization": contributions["organization"],
            "Wallet": contributions["participant"].map(short),
            "Quality": contributions["quality"],
            "Timeliness": contributions["timeliness"],
            "Honesty": contributions["honesty"],
            "Fitness": contributions["fitness"],
            "Kept": contributions["kept"],
            "Byzantine": contributions["byzantine"],
            f"Reward{unit}": contributions["reward_wei"].map(fmt_exact),
            "Reputation after": contributions["reputation_after"].map(lambda v: _number(v, ".1f")),
            "Evidence": contributions["evidence"],
        }
    )
