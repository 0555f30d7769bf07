"""Overview: organizations, the current round and its progress, contributions, the model version."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from fedledger.api.schemas import ModelOut, RoundOut
from visualization import tables
from visualization.data import fmt_amount, fmt_tokens, short_address
from visualization.session import Context


def render(ctx: Context) -> None:
    st.title("Overview")
    overview = ctx.api.overview()
    model = ctx.api.current_model()
    current = ctx.api.current_round()
    token = overview.token

    # st.columns gives a tuple as long as the count: the page reuses the name for fewer columns.
    cols: Sequence[DeltaGenerator] = st.columns(6)
    cols[0].metric(
        "Active organizations",
        overview.active_participants,
        help=f"{overview.participants} registered with the API; active ones may take part in rounds",
    )
    cols[1].metric(
        "Enrolled on-chain",
        token.active_participants if token else "—",
        help="Organizations with an active stake in ParticipantRegistry",
    )
    cols[2].metric(
        "Rounds completed", overview.rounds_completed, help="Rounds aggregated and recorded on-chain"
    )
    cols[3].metric("Total contributions", overview.contributions, help="Scored updates over all rounds")
    cols[4].metric("Model version", f"v{model.version}" if model else "—")
    backlog, allowed = overview.posting_backlog, overview.max_posting_backlog
    cols[5].metric(
        "Posting backlog",
        backlog,
        help="Rounds aggregated but not yet recorded on-chain: their rewards, slashes and activity wait",
    )
    if backlog > allowed:
        st.warning(
            f"Posting is behind: {backlog} aggregated rounds wait for their on-chain record (at most {allowed} "
            "may). New rounds are refused until the worker's retries catch up (emission cap used for this "
            "period, or the chain node unreachable)."
        )
    elif backlog:
        st.info(
            f"{backlog} aggregated round(s) wait for their on-chain record; the worker retries with backoff."
        )

    left, right = st.columns(2)
    with left:
        st.subheader("Current round")
        if current is None:
            st.info("No round has been opened yet. An operator opens one once the genesis model is uploaded.")
        else:
            _round(current)
    with right:
        st.subheader("Global model")
        if model is None:
            st.info("No model yet: the operator uploads the genesis model first.")
        else:
            _model(model)

    if token is not None:
        st.subheader("Token")
        cols = st.columns(3)
        symbol = token.symbol
        unit = f" ({symbol})" if symbol else ""
        cols[0].metric(
            f"Total supply{unit}",
            fmt_amount(token.total_supply),
            help=fmt_tokens(token.total_supply, symbol, digits=18),
        )
        cols[1].metric(f"Stake locked{unit}", fmt_amount(token.total_staked))
        cols[2].metric(f"Treasury{unit}", fmt_amount(token.treasury_balance))

    st.subheader("Organizations")
    participants = tables.participants_frame(ctx.api.participants())
    if participants.empty:
        st.info("No organization has registered yet.")
    else:
        st.dataframe(
            tables.participants_table(participants),
            hide_index=True,
            width="stretch",
            column_config={
                "Reputation": st.column_config.ProgressColumn(
                    "Reputation", min_value=0, max_value=100, format="%.1f"
                ),
                "Times excluded": st.column_config.NumberColumn(
                    "Times excluded",
                    help="Rounds in which the aggregator excluded this organization's update",
                ),
            },
        )


def _round(current: RoundOut) -> None:
    st.markdown(
        f"**Round {current.id}** · `{current.status}` · strategy **{current.strategy}** "
        f"· model v{current.model_version}"
    )
    quorum = max(current.quorum, 1)
    submissions = current.submissions
    st.progress(min(submissions / quorum, 1.0), text=f"Updates received: {submissions} of quorum {quorum}")
    opened = _utc(current.opened_at)
    deadline = _utc(current.deadline)
    if current.status == "OPEN":
        total = max((deadline - opened).total_seconds(), 1.0)
        elapsed = (datetime.now(UTC) - opened).total_seconds()
        left = max((deadline - datetime.now(UTC)).total_seconds(), 0)
        st.progress(
            min(max(elapsed / total, 0.0), 1.0),
            text=f"Time: {int(left // 60)} min {int(left % 60)} s left (deadline {deadline:%Y-%m-%d %H:%M:%S} UTC)",
        )
    else:
        closed = current.closed_at
        closed_at = _utc(closed) if closed else None
        st.caption(
            f"Deadline {deadline:%Y-%m-%d %H:%M:%S} UTC"
            + (f" · closed {closed_at:%Y-%m-%d %H:%M:%S} UTC" if closed_at else "")
        )
    st.caption(
        f"At least {current.min_participants} participants · {current.extensions} deadline extension(s)"
    )
    if current.failure_reason and current.status == "FAILED":
        st.error(f"Round failed: {current.failure_reason}")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _model(model: ModelOut) -> None:
    st.markdown(
        f"**Version {model.version}** · `{model.status}`"
        + (f" · produced by round {model.produced_by_round}" if model.produced_by_round else " · genesis")
    )
    st.caption(f"SHA-256 `{model.weights_hash}` · signed by {short_address(model.signer)}")
    metrics = model.metrics
    if metrics:
        cols = st.columns(min(len(metrics), 4))
        for col, (name, value) in zip(cols, sorted(metrics.items())[:4], strict=False):
            col.metric(name.replace("_", " "), f"{value:.4f}" if isinstance(value, float) else value)
    shapes = ", ".join(f"{name} {tuple(dims)}" for name, dims in sorted(model.spec.items()))
    st.caption(f"Tensors: {shapes}")
