"""Contributions: every scored update, filterable, and one organization's history."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.elements.lib.column_types import ColumnConfig

from visualization import charts, tables
from visualization.data import fmt_amount
from visualization.session import Context


def _score_column(label: str) -> ColumnConfig:
    """A 0-100 score as a bar. Narrow score bars and evidence: all twelve columns fit a 1440 px window
    (none cut off behind a scrollbar)."""
    return st.column_config.ProgressColumn(label, min_value=0, max_value=100, format="%.0f", width="small")


def render(ctx: Context) -> None:
    st.title("Contributions")
    frame = tables.contributions_frame(ctx.api.contributions(), ctx.api.participants())
    if frame.empty:
        st.info("No contribution has been scored yet: each aggregated round adds one row per update.")
        return
    symbol = ctx.symbol

    # st.columns gives a list for widths and a tuple for a count: both are a sequence of columns.
    cols: Sequence[DeltaGenerator] = st.columns([2, 3, 3, 1])
    rounds = cols[0].multiselect(
        "Rounds", sorted(frame["round"].unique(), reverse=True), key="contrib-rounds"
    )
    orgs = cols[1].multiselect("Organizations", sorted(frame["organization"].unique()), key="contrib-orgs")
    fitness = cols[2].slider("Fitness", 0.0, 100.0, (0.0, 100.0), step=1.0, key="contrib-fitness")
    kept_only = cols[3].toggle("Kept only", key="contrib-kept")
    shown = tables.filter_contributions(frame, rounds, orgs, fitness, kept_only)

    cols = st.columns(4)
    cols[0].metric("Contributions", len(shown))
    cols[1].metric("Mean fitness", f"{shown['fitness'].mean():.1f}" if len(shown) else "—")
    cols[2].metric("Kept", f"{int(shown['kept'].sum())} / {len(shown)}")
    cols[3].metric(f"Rewards ({symbol})" if symbol else "Rewards", _total(shown))

    unit = f" ({symbol})" if symbol else ""
    st.dataframe(
        tables.contributions_table(shown, symbol),
        hide_index=True,
        width="stretch",
        key="contrib-table",
        column_config={
            "Quality": _score_column("Quality"),
            "Timeliness": _score_column("Timeliness"),
            "Honesty": _score_column("Honesty"),
            "Fitness": _score_column("Fitness"),
            f"Reward{unit}": st.column_config.TextColumn(f"Reward{unit}", width="small"),
            "Kept": st.column_config.CheckboxColumn("Kept", width="small"),
            "Byzantine": st.column_config.CheckboxColumn(
                "Byzantine", width="small", help="Flagged Byzantine by the round's robust rule"
            ),
            "Round": st.column_config.NumberColumn("Round", width="small"),
            "Reputation after": st.column_config.TextColumn("Reputation after", width="small"),
            # Evidence labels run long: a narrow cell (the whole text on hover) keeps the table in the window.
            "Evidence": st.column_config.TextColumn(
                "Evidence", width="small", help="Why the round's rule flagged or left out the update"
            ),
        },
    )

    st.subheader("Organization history")
    names = sorted(frame["organization"].unique())
    auth = ctx.auth
    mine = next(
        (
            n
            for n in names
            if auth
            and frame.loc[frame["organization"] == n, "participant"]
            .str.lower()
            .eq(auth["address"].lower())
            .any()
        ),
        None,
    )
    org = st.selectbox(
        "Organization", names, index=names.index(mine) if mine else 0, key="contrib-history-org"
    )
    history = frame[frame["organization"] == org]
    cols = st.columns(4)
    cols[0].metric("Rounds contributed", history["round"].nunique())
    cols[1].metric("Mean fitness", f"{history['fitness'].mean():.1f}")
    cols[2].metric(f"Total rewards ({symbol})" if symbol else "Total rewards", _total(history))
    latest = history.sort_values("round").iloc[-1]
    cols[3].metric("Reputation", f"{latest['reputation_after']:.1f}")
    st.plotly_chart(charts.organization_history(history, symbol), width="stretch", key="chart-org-history")


def _total(frame: pd.DataFrame) -> str:
    """The rewards of these rows, summed in wei (exact), as a headline figure."""
    amounts: list[int] = [int(w) for w in frame["reward_wei"]]
    return fmt_amount(sum(amounts))
