"""Plotly figures of the dashboard, built from the frames of :mod:`visualization.tables` only."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "y": -0.2},
    "height": 340,
}
KEPT, EXCLUDED, REJECTED = "#2e9e5b", "#e39b2d", "#d3453b"


def accuracy_loss(rounds: pd.DataFrame) -> go.Figure:
    """Holdout accuracy (left axis) and holdout loss before/after (right axis) per aggregated round."""
    data = rounds[rounds["aggregated"]]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Scatter(x=data["round"], y=data["accuracy"], name="accuracy", mode="lines+markers"),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(x=data["round"], y=data["loss_after"], name="loss after", mode="lines+markers"),
        secondary_y=True,
    )
    figure.add_trace(
        go.Scatter(
            x=data["round"],
            y=data["loss_before"],
            name="loss before",
            mode="lines+markers",
            line={"dash": "dot"},
        ),
        secondary_y=True,
    )
    figure.update_layout(title="Holdout accuracy and loss per round", **LAYOUT)
    figure.update_xaxes(title_text="round", type="category")
    figure.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%", secondary_y=False)
    # Its own ticks (not synced to the accuracy grid, which puts them at values like 0.879 and 1.258).
    figure.update_yaxes(
        title_text="loss",
        secondary_y=True,
        tickmode="auto",
        nticks=6,
        tickformat=".2f",
        rangemode="tozero",
        showgrid=False,
    )
    return figure


def kept_excluded(rounds: pd.DataFrame) -> go.Figure:
    data = rounds[rounds["aggregated"]]
    figure = go.Figure(
        [
            go.Bar(x=data["round"], y=data["kept"], name="kept", marker_color=KEPT),
            go.Bar(x=data["round"], y=data["excluded"], name="excluded", marker_color=EXCLUDED),
            go.Bar(x=data["round"], y=data["rejected"], name="rejected", marker_color=REJECTED),
        ]
    )
    figure.update_layout(barmode="stack", title="Updates kept, excluded and rejected per round", **LAYOUT)
    figure.update_xaxes(title_text="round", type="category")
    figure.update_yaxes(title_text="updates")
    return figure


def fitness_distribution(contributions: pd.DataFrame) -> go.Figure:
    """Fitness of every scored update per round, kept and excluded updates side by side (colour = fate)."""
    figure = go.Figure()
    data = contributions.sort_values("round")
    for kept, name, colour in ((True, "kept", KEPT), (False, "excluded", EXCLUDED)):
        part = data[data["kept"] == kept]
        if part.empty:
            continue
        figure.add_trace(
            go.Box(
                x=part["round"].astype(str),
                y=part["fitness"],
                name=name,
                marker_color=colour,
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                hovertext=part["organization"],
            )
        )
    figure.update_layout(title="Fitness per round: kept and excluded updates", boxmode="group", **LAYOUT)
    order = [str(r) for r in sorted(data["round"].unique())]
    figure.update_xaxes(title_text="round", type="category", categoryorder="array", categoryarray=order)
    figure.update_yaxes(title_text="fitness (0–100)", range=[0, 100])
    return figure


def privacy_budget(rounds: pd.DataFrame, budget: float | None) -> go.Figure:
    """Cumulative ε spent after each round against the governed budget."""
    data = rounds[rounds["epsilon_spent"].notna()]
    figure = go.Figure(
        go.Scatter(
            x=data["round"], y=data["epsilon_spent"], name="ε spent", mode="lines+markers", fill="tozeroy"
        )
    )
    if budget is not None:
        figure.add_hline(
            y=budget, line_dash="dash", line_color=REJECTED, annotation_text=f"budget ε = {budget:g}"
        )
    figure.update_layout(title="Privacy budget spent", **LAYOUT)
    figure.update_xaxes(title_text="round", type="category")
    figure.update_yaxes(title_text="ε (cumulative)", rangemode="tozero")
    return figure


def rewards_per_round(rounds: pd.DataFrame, symbol: str) -> go.Figure:
    data = rounds[rounds["aggregated"]]
    figure = go.Figure(go.Bar(x=data["round"], y=data["reward"], name="rewards", marker_color=KEPT))
    figure.update_layout(title=f"Rewards assigned per round ({symbol})", **LAYOUT)
    figure.update_xaxes(title_text="round", type="category")
    figure.update_yaxes(title_text=symbol or "tokens")
    return figure


def organization_history(history: pd.DataFrame, symbol: str) -> go.Figure:
    """One organization's scores per round (lines) and rewards (bars, right axis)."""
    data = history.sort_values("round")
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    # Scores as grouped bars: equal scores (all four at 100, as an honest organization gets) stand side by
    # side, where lines on top of each other showed only the last one drawn.
    for column in ("fitness", "quality", "timeliness", "honesty"):
        figure.add_trace(
            go.Bar(x=data["round"], y=data[column], name=column, offsetgroup=column),
            secondary_y=False,
        )
    figure.add_trace(
        go.Scatter(
            x=data["round"],
            y=data["reward"],
            name=f"reward ({symbol})",
            mode="lines+markers",
            line={"color": "#1f2933", "dash": "dot"},
        ),
        secondary_y=True,
    )
    figure.update_layout(title="Scores and rewards per round", barmode="group", **LAYOUT)
    figure.update_xaxes(title_text="round", type="category")
    figure.update_yaxes(title_text="score (0–100)", range=[0, 100], secondary_y=False)
    figure.update_yaxes(title_text=symbol or "tokens", secondary_y=True, rangemode="tozero")
    return figure


def token_allocation(supply: float, staked: float, treasury: float, symbol: str) -> go.Figure:
    """Where the supply is: staked in the registry, in the treasury (timelock), and held elsewhere."""
    held = max(supply - staked - treasury, 0.0)
    figure = go.Figure(
        go.Pie(
            labels=["treasury", "staked", "held by accounts"],
            values=[treasury, staked, held],
            hole=0.5,
            sort=False,
        )
    )
    figure.update_layout(title=f"Supply allocation ({symbol})", **LAYOUT)
    return figure


# Round ids are labels, not quantities: a category axis shows "round 7" as 7 (never 7.5, never "427.6M").
MODEBAR_OFF = {"displayModeBar": False}


def vote_tally(for_votes: float, against: float, abstain: float, quorum: float) -> go.Figure:
    figure = go.Figure(
        [
            go.Bar(y=["votes"], x=[for_votes], name="for", orientation="h", marker_color=KEPT),
            go.Bar(y=["votes"], x=[abstain], name="abstain", orientation="h", marker_color="#9aa5b1"),
            go.Bar(y=["votes"], x=[against], name="against", orientation="h", marker_color=REJECTED),
        ]
    )
    # The label sits above the bars, on the page's background: over the green "for" bar it was unreadable.
    figure.add_vline(
        x=quorum,
        line_dash="dash",
        annotation_text="quorum (for + abstain)",
        annotation_position="top",
        annotation_yanchor="bottom",
        annotation_font_color="#1f2933",
        annotation_bgcolor="rgba(255, 255, 255, 0.9)",
    )
    figure.update_layout(
        barmode="stack",
        height=170,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        showlegend=True,
        legend={"orientation": "h", "y": -0.5},
    )
    return figure
