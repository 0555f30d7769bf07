"""Training: accuracy and loss per round, fitness distributions, kept vs excluded, privacy budget."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from fedledger.api.schemas import SecAggGroupsOut
from visualization import charts, secure, tables
from visualization.data import fmt_amount
from visualization.session import Context


def render(ctx: Context) -> None:
    st.title("Training")
    rounds = tables.rounds_frame(ctx.api.rounds())
    aggregated = rounds[rounds["aggregated"]]
    if aggregated.empty:
        if rounds.empty:
            st.info("No round has been opened yet: training charts appear once rounds are aggregated.")
        else:
            st.info(
                f"{len(rounds)} round(s) so far, none aggregated yet: charts appear after the first round closes."
            )
        _round_table(rounds)
        if not rounds.empty:
            # How each round runs, and a failed secure round's groups and privacy charge, need no aggregation.
            _mode(ctx, rounds)
        return

    latest = aggregated.iloc[-1]
    cols = st.columns(4)
    cols[0].metric("Aggregated rounds", len(aggregated))
    cols[1].metric(
        "Latest accuracy", "—" if latest["accuracy"] != latest["accuracy"] else f"{latest['accuracy']:.2%}"
    )
    cols[2].metric(
        "Latest holdout loss",
        "—" if latest["loss_after"] != latest["loss_after"] else f"{latest['loss_after']:.4f}",
    )
    cols[3].metric(
        "Rolled back",
        int(aggregated["rolled_back"].fillna(False).astype(bool).sum()),
        help="Rounds whose new model degraded the holdout loss and was not activated",
    )

    left, right = st.columns(2)
    left.plotly_chart(charts.accuracy_loss(rounds), width="stretch", key="chart-accuracy-loss")
    right.plotly_chart(charts.kept_excluded(rounds), width="stretch", key="chart-kept-excluded")

    contributions = tables.contributions_frame(ctx.api.contributions(), ctx.api.participants())
    left, right = st.columns(2)
    if contributions.empty:
        left.info("No scored contribution yet.")
    else:
        left.plotly_chart(charts.fitness_distribution(contributions), width="stretch", key="chart-fitness")
    with right:
        _privacy(ctx, rounds)
    _round_table(rounds)
    _mode(ctx, rounds)


def _privacy(ctx: Context, rounds: pd.DataFrame) -> None:
    budget = enabled = None
    if ctx.chain is not None:
        params = ctx.chain.params()
        budget, enabled = params.real("dp_epsilon_budget"), params.flag("dp_enabled")
    spent = rounds["epsilon_spent"].dropna()
    if spent.empty:
        state = "off" if enabled is False else "on" if enabled else "unknown (chain unreachable)"
        st.info(
            f"No privacy budget spent yet. Differential privacy is {state}"
            + (f"; the governed budget is ε = {budget:g}." if budget is not None else ".")
        )
        return
    st.plotly_chart(charts.privacy_budget(rounds, budget), width="stretch", key="chart-privacy")
    if budget:
        st.progress(
            min(float(spent.iloc[-1]) / budget, 1.0),
            text=f"ε spent {spent.iloc[-1]:.3g} of budget {budget:g}",
        )


def _mode(ctx: Context, rounds: pd.DataFrame) -> None:
    """One round's aggregation mode and, under secure aggregation, its members' outcomes."""
    st.subheader("Aggregation mode")
    ids = sorted((int(r) for r in rounds["round"]), reverse=True)
    chosen = st.selectbox("Round", ids, key="mode-round")
    round_ = ctx.api.round(int(chosen)) if chosen is not None else None
    if round_ is None:
        st.info("Pick a round to see how it was aggregated.")
        return
    mode = secure.RoundMode.of(round_.params)
    st.markdown(f"Round {round_.id}: **{mode.label()}**")
    spent = rounds.loc[rounds["round"] == round_.id, "epsilon_spent"].dropna()
    if mode.dp and not spent.empty:
        st.caption(f"ε spent after this round: {float(spent.iloc[0]):.3g} (the accountant's total so far)")
    if not mode.secure:
        st.caption("Each organization's update was sealed to the server, which scored each one.")
        return
    st.caption(
        f"The server learned only the sum of each group of at least {mode.group_size} members; each member's "
        "scores, flag and reward are its group's (the reward split by capped sample claims)"
        + (". The members added their differential-privacy noise before masking." if mode.dp else ".")
    )
    names = tables.organizations(ctx.api.participants())
    members = secure.members_frame(ctx.api.contributions(round_id=round_.id), names, round_.id)
    if members.empty:
        st.info("No member has been scored yet: the groups' sums are unmasked when the round closes.")
    else:
        cols = st.columns(4)
        cols[0].metric("Members in a group sum", len(members))
        cols[1].metric("Kept", int(members["kept"].sum()))
        cols[2].metric("Flagged (with their group)", int(members["flagged"].sum()))
        symbol = ctx.symbol
        cols[3].metric(
            f"Rewards ({symbol})" if symbol else "Rewards", fmt_amount(int(members["reward_wei"].sum()))
        )
        st.dataframe(
            secure.members_table(members, symbol), hide_index=True, width="stretch", key="mode-members"
        )
    report = ctx.api.secagg_groups(round_.id)
    if report is not None:
        _groups(ctx, report, names)
    _own_group(ctx, round_.id, members, names, report)


def _groups(ctx: Context, report: SecAggGroupsOut, names: dict[str, str]) -> None:
    """Every group of the round and its outcome, for everyone (the API's public groups report)."""
    st.markdown(f"**Groups**: {len(report.groups)} drawn")
    drawn = (
        f"Drawn from the hash of block {report.seed_block}. "
        if report.seed_block is not None and report.groups
        else ""
    )
    st.caption(
        drawn + "Members are shown once the round is closed; no group's sum or mean is published, only "
        "what became of it."
    )
    if report.failure_reason:
        st.info(f"No group was drawn: {report.failure_reason}")
    if report.charged_on_failure and report.epsilon_spent is not None:
        st.warning(
            "The round failed after some groups' noised sums were unmasked: that release is charged to the "
            f"privacy budget (ε spent after this round: {report.epsilon_spent:.3g})."
        )
    if report.groups:
        st.dataframe(
            secure.groups_table(report, names, ctx.symbol),
            hide_index=True,
            width="stretch",
            key="mode-groups",
        )


def _own_group(
    ctx: Context,
    round_id: int,
    members: pd.DataFrame,
    names: dict[str, str],
    report: SecAggGroupsOut | None,
) -> None:
    """The signed-in organization's group: who was in it, who is in its sum, and how its reward was split
    (the API serves a group's members to its members only)."""
    auth = ctx.auth
    if auth is None:
        st.caption("Sign in with your organization's wallet to see your own group.")
        return
    view = ctx.api.secagg(round_id, str(auth["token"]))
    if view is None or view.group is None:
        st.caption("Your organization was in no group of this round.")
        return
    # The public report says what became of the group; a round that failed after unmasking it scored nobody.
    public = next((g for g in report.groups if g.index == view.group.index), None) if report else None
    unscored = None
    if public is not None and public.status == "unmasked" and report and report.round_status == "FAILED":
        unscored = "not scored or paid: the round failed after its group's sum was unmasked"
    outcome = secure.group_outcome(view.group.members, view.group.threshold, members, names, unscored)
    st.markdown(
        f"**Your group**: {len(outcome.members)} members, threshold {outcome.threshold} "
        f"(its sum is unmasked with at least {outcome.threshold} of them)"
    )
    if public is not None:
        st.caption(f"What became of it: {secure.status_in_words(public)}.")
    in_sum = public.survivors if public is not None and public.survivors is not None else outcome.in_sum
    symbol = ctx.symbol
    cols = st.columns(3)
    cols[0].metric("In the group's sum", in_sum)
    cols[1].metric(
        "Not in the sum",
        len(outcome.members) - in_sum,
        help="Dropped out, or the group could not be unmasked",
    )
    cols[2].metric(
        f"Group reward ({symbol})" if symbol else "Group reward",
        fmt_amount(outcome.reward_wei),
        help="Split among the members in the sum by their capped sample claims",
    )
    st.dataframe(
        secure.members_table(outcome.members, symbol), hide_index=True, width="stretch", key="mode-group"
    )


def _round_table(rounds: pd.DataFrame) -> None:
    if rounds.empty:
        return
    st.subheader("Rounds")
    st.dataframe(tables.rounds_table(rounds), hide_index=True, width="stretch")
