"""Token economics: supply, rewards per round, stake, treasury, and the signed-in organization's account."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from fedledger.api.schemas import RewardOut
from fedledger.chain.reader import RewardStatus
from visualization import charts, tables
from visualization.data import DASHBOARD_ERRORS, fmt_amount, fmt_exact, fmt_tokens, tokens
from visualization.session import Context, keep_showing, transaction_button


def render(ctx: Context) -> None:
    st.title("Token economics")
    if ctx.chain is None:
        st.error(f"The chain is not reachable, so token figures are unavailable: {ctx.chain_error}")
        return
    chain, symbol = ctx.chain, ctx.symbol
    figures = chain.token_figures()
    unit = f" ({symbol})" if symbol else ""
    # st.columns gives a list for widths and a tuple for a count: both are a sequence of columns.
    cols: Sequence[DeltaGenerator] = st.columns(4)
    cols[0].metric(
        f"Total supply{unit}",
        fmt_amount(figures.total_supply),
        help=fmt_tokens(figures.total_supply, symbol, digits=18),
    )
    cols[1].metric(
        f"Stake locked{unit}", fmt_amount(figures.total_staked), help="Held by ParticipantRegistry"
    )
    cols[2].metric(
        f"Treasury{unit}",
        fmt_amount(figures.treasury_balance),
        help="Held by the timelock, spent only by governance",
    )
    cols[3].metric("Enrolled organizations", figures.active_participants)

    rounds = tables.rounds_frame(ctx.api.rounds())
    left, right = st.columns(2)
    if rounds["aggregated"].any():
        left.plotly_chart(charts.rewards_per_round(rounds, symbol), width="stretch", key="chart-rewards")
    else:
        left.info("No rewards yet: each aggregated round assigns rewards to its contributors.")
    right.plotly_chart(
        charts.token_allocation(
            tokens(figures.total_supply),
            tokens(figures.total_staked),
            tokens(figures.treasury_balance),
            symbol,
        ),
        width="stretch",
        key="chart-allocation",
    )

    st.header("Your organization")
    auth = ctx.auth
    if auth is None:
        st.info(
            "Connect your wallet and sign in (sidebar) to see your balance, stake, reputation and rewards."
        )
        return
    address = auth["address"]
    account = chain.account(address)
    try:
        me = ctx.api.me(auth["token"])
    except DASHBOARD_ERRORS as exc:
        st.warning(f"The API did not return your organization: {exc}")
        me = None
    cols = st.columns(4)
    cols[0].metric(
        f"Balance{unit}", fmt_amount(account.balance), help=fmt_tokens(account.balance, symbol, digits=18)
    )
    cols[1].metric(
        f"Stake{unit}", fmt_amount(account.stake), help=f"On-chain status: {account.registry_status.name}"
    )
    cols[2].metric("Reputation", f"{me.reputation:.1f}" if me else "—")
    cols[3].metric(f"Voting power{unit}", fmt_amount(account.votes))
    if me is None:
        st.caption("This wallet has not registered an organization with the API.")
    else:
        st.caption(
            f"**{me.org_name}** · API status `{me.status}` · registry `{me.chain_status}`"
            + ("" if me.may_submit else f" · may not submit: {me.reason}")
        )
    if account.delegate is None and account.balance > 0:
        st.warning("Your tokens carry no votes until you delegate them (to yourself, to vote directly).")
        transaction_button(
            ctx,
            key="tx-delegate",
            label="Delegate votes to myself",
            to=chain.reader.token.address,
            data=chain.delegate_calldata(address),
            sender=address,
            describe="Delegate votes",
        )

    st.subheader("Claimable rewards")
    rewards = ctx.api.rewards(address, auth["token"])
    if rewards is None:
        st.info("This API does not serve reward proofs yet; claims appear once it does.")
        return
    # What a claim would meet on the chain, judged at the time of the block it would land in: only rounds
    # whose dispute window is over (and that were not cancelled in it) count as claimable or get a button.
    now = chain.next_block_time()
    standings = {r.round_id: chain.reward_standing(r.round_id, address, now) for r in rewards}
    by_status: dict[RewardStatus | None, list[RewardOut]] = {}
    for reward in rewards:
        by_status.setdefault(standings[reward.round_id].status, []).append(reward)
    claimable = by_status.get(RewardStatus.claimable, [])
    waiting = by_status.get(RewardStatus.in_dispute_window, [])
    cancelled = by_status.get(RewardStatus.cancelled, [])
    claimed = by_status.get(RewardStatus.claimed, [])
    if claimable or waiting:
        cols = st.columns(2)
        cols[0].metric(f"Claimable{unit}", fmt_amount(sum(int(r.amount_wei) for r in claimable)))
        if waiting:
            opens = min(standings[r.round_id].claimable_at for r in waiting)
            cols[1].metric(
                f"In dispute window{unit}",
                fmt_amount(sum(int(r.amount_wei) for r in waiting)),
                help="Recorded, claimable once the round's dispute window is over (governance or a guardian "
                f"may cancel them until then); the first at {_utc(opens)}",
            )
    if not claimable:
        st.info(
            "Nothing to claim."
            + (f" {len(claimed)} reward(s) already claimed." if claimed else "")
            + (f" {len(waiting)} reward(s) still in their dispute window." if waiting else "")
            + (f" {len(cancelled)} reward(s) cancelled." if cancelled else "")
        )
    distributor = chain.reader.distributor.address
    # Several claimable rounds: one transaction (claimMany, one mint) instead of one per round. Kept on the
    # page once offered, as the per-round buttons are, so the wallet's answer arrives through it.
    batch = sorted(claimable, key=lambda r: r.round_id)[:MAX_CLAIMS]
    offered = f"claim-all-{address}"
    if len(batch) > 1:
        st.session_state[offered] = [(r.round_id, int(r.amount_wei), list(r.proof)) for r in batch]
    if keep_showing(offered, len(batch) > 1):
        # The batch as offered: once claimed the rounds leave ``claimable``, and the same calldata is what
        # identifies the wallet's answer.
        many = st.session_state[offered]
        total = sum(amount for _, amount, _ in many)
        transaction_button(
            ctx,
            key="tx-claim-all",
            label=f"Claim all ({len(many)} rounds, {fmt_exact(total)} {symbol})".replace(" )", ")"),
            to=distributor,
            data=chain.claim_many_calldata(address, many),
            sender=address,
            describe=f"Claim {len(many)} rounds",
            disabled=len(batch) < 2,
            simulate=len(batch) > 1 and [r for r, _, _ in many] == [r.round_id for r in batch],
        )
    for reward in sorted(rewards, key=lambda r: r.round_id):
        round_id, amount = reward.round_id, int(reward.amount_wei)
        standing = standings[round_id]
        line = f"Round **{round_id}**: {fmt_exact(amount)} {symbol}".rstrip()
        # A claimed reward keeps its (disabled) button in the session that claimed it: the wallet's answer
        # arrives through it.
        if keep_showing(f"claim-{round_id}-{address}", standing.status is RewardStatus.claimable):
            is_claimed = standing.status is RewardStatus.claimed
            cols = st.columns([3, 2])
            cols[0].markdown(line + (" · claimed" if is_claimed else ""))
            with cols[1]:
                transaction_button(
                    ctx,
                    key=f"tx-claim-{round_id}",
                    label=f"Claim round {round_id}",
                    to=distributor,
                    data=chain.claim_calldata(round_id, address, amount, list(reward.proof)),
                    sender=address,
                    describe=f"Claim round {round_id}",
                    disabled=is_claimed,
                    simulate=not is_claimed,
                )
        elif standing.status is RewardStatus.in_dispute_window:
            st.markdown(
                f"{line} · in its dispute window: claimable at {_utc(standing.claimable_at)} "
                f"({_left(standing.claimable_at - now)})"
            )
        elif standing.status is RewardStatus.cancelled:
            st.markdown(
                f"{line} · cancelled in its dispute window by governance or a guardian: nothing can be claimed"
            )
        elif standing.status is None:
            st.markdown(f"{line} · not recorded on-chain: nothing to claim yet")


# RewardDistributor.MAX_CLAIMS: a longer claimMany reverts (BadClaimBatch).
MAX_CLAIMS = 64


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _left(seconds: int) -> str:
    """``seconds`` from now as a person reads it: "in about 2 d 3 h", "in about 59 min", "in under a minute"."""
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"in about {days} d {hours % 24} h"
    if hours:
        return f"in about {hours} h {minutes % 60} min"
    if minutes:
        return f"in about {minutes} min"
    return "in under a minute"
