"""Token economics: supply, rewards per round, stake, treasury, and the signed-in organization's account."""

from __future__ import annotations

import streamlit as st

from visualization import charts, tables
from visualization.data import DASHBOARD_ERRORS, fmt_amount, fmt_tokens, tokens
from visualization.session import Context, keep_showing, transaction_button


def render(ctx: Context) -> None:
    st.title("Token economics")
    if ctx.chain is None:
        st.error(f"The chain is not reachable, so token figures are unavailable: {ctx.chain_error}")
        return
    chain, symbol = ctx.chain, ctx.symbol
    figures = chain.token_figures()
    unit = f" ({symbol})" if symbol else ""
    cols = st.columns(4)
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
    cols[2].metric("Reputation", f"{me['reputation']:.1f}" if me else "—")
    cols[3].metric(f"Voting power{unit}", fmt_amount(account.votes))
    if me is None:
        st.caption("This wallet has not registered an organization with the API.")
    else:
        st.caption(
            f"**{me['org_name']}** · API status `{me['status']}` · registry `{me.get('chain_status')}`"
            + ("" if me.get("may_submit") else f" · may not submit: {me.get('reason')}")
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
        st.info(
            "This API does not serve reward proofs yet (GET /v1/rewards/{address}); claims appear once it does."
        )
        return
    for reward in rewards:
        reward["claimed"] = chain.claimed(int(reward["round_id"]), address)
    claimable = [r for r in rewards if not r["claimed"]]
    if claimable:
        st.metric(f"Claimable{unit}", fmt_amount(sum(int(r["amount_wei"]) for r in claimable)))
    else:
        claimed = len(rewards) - len(claimable)
        st.info("Nothing to claim." + (f" {claimed} reward(s) already claimed." if claimed else ""))
    distributor = chain.reader.distributor.address
    for reward in sorted(rewards, key=lambda r: int(r["round_id"])):
        round_id, amount = int(reward["round_id"]), int(reward["amount_wei"])
        # A claimed reward keeps its (disabled) button in the session that claimed it: the wallet's answer
        # arrives through it.
        if not keep_showing(f"claim-{round_id}-{address}", not reward["claimed"]):
            continue
        cols = st.columns([3, 2])
        cols[0].markdown(
            f"Round **{round_id}**: {fmt_tokens(amount, symbol, digits=4)}"
            + (" · claimed" if reward["claimed"] else "")
        )
        with cols[1]:
            transaction_button(
                ctx,
                key=f"tx-claim-{round_id}",
                label=f"Claim round {round_id}",
                to=distributor,
                data=chain.claim_calldata(round_id, address, amount, list(reward.get("proof") or [])),
                sender=address,
                describe=f"Claim round {round_id}",
                disabled=bool(reward["claimed"]),
                simulate=not reward["claimed"],
            )
