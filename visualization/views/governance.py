"""Governance: proposals with their state and tally, voting, queue/execute, and new parameter proposals."""

from __future__ import annotations

import time

import streamlit as st

from fedledger.chain.governance import ProposalState, VoteType
from visualization import charts
from visualization.data import fmt_amount, fmt_tokens, short_address, tokens
from visualization.governance import Governance, Proposal, proposal_id, settable_specs
from visualization.session import Context, keep_showing, transaction_button


def render(ctx: Context) -> None:
    st.title("Governance")
    if ctx.chain is None:
        st.error(f"The chain is not reachable, so governance is unavailable: {ctx.chain_error}")
        return
    gov = Governance(ctx.chain)
    auth = ctx.auth
    voter = auth["address"] if auth else None
    _live(ctx, gov, voter)
    st.subheader("Propose a parameter change")
    _create(ctx, gov, voter)


# Proposals move on with the chain (Pending → Active → Succeeded → Queued → Executed): this part of the
# page reads them again on its own, so nobody has to reload (which used to sign the person out).
REFRESH_SECONDS = 5


@st.fragment(run_every=REFRESH_SECONDS)
def _live(ctx: Context, gov: Governance, voter: str | None) -> None:
    """The chain's governance figures and every proposal with its actions, re-read every few seconds."""
    assert ctx.chain is not None
    symbol = ctx.symbol
    block = gov.clock()
    numerator = int(gov.governor.functions.quorumNumerator().call())
    denominator = int(gov.governor.functions.quorumDenominator().call())
    cols = st.columns(5)
    cols[0].metric("Current block", block)
    cols[1].metric("Voting delay", _blocks(gov.voting_delay()))
    cols[2].metric("Voting period", _blocks(gov.voting_period()))
    cols[3].metric(
        "Quorum (of supply)",
        f"{100 * numerator / denominator:g}%",
        help="For + Abstain votes a proposal needs, as a share of the token supply at its snapshot",
    )
    cols[4].metric("Timelock delay", f"{int(ctx.chain.timelock.functions.getMinDelay().call())} s")
    pace = _block_seconds(ctx, block)
    if pace is not None:
        period_min = gov.voting_period() * pace / 60
        st.caption(
            f"A block about every {pace:.0f} s on this chain: voting lasts about {period_min:.1f} min. "
            f"The proposals below refresh every {REFRESH_SECONDS} s through Pending, Active, Succeeded, "
            "Queued and Executed."
        )
    if voter:
        account = ctx.chain.account(voter)
        st.caption(
            f"Your voting power: **{fmt_tokens(account.votes, symbol)}**"
            + ("" if account.delegate else " (delegate your tokens on the Token economics page to vote)")
        )

    proposals = gov.proposals(voter)
    unit = f" ({symbol})" if symbol else ""
    st.subheader("Proposals")
    if not proposals:
        st.info("No proposal yet. Create the first one below.")
    else:
        st.dataframe(
            [
                {
                    "Proposal": short_id(p.id),
                    "Title": p.title,
                    "State": p.state.name,
                    f"For{unit}": fmt_amount(p.for_votes),
                    f"Against{unit}": fmt_amount(p.against_votes),
                    f"Abstain{unit}": fmt_amount(p.abstain_votes),
                    f"Quorum{unit}": fmt_amount(p.quorum),
                    "Voting ends (block)": p.deadline,
                }
                for p in proposals
            ],
            hide_index=True,
            width="stretch",
            key="gov-proposals",
        )
        for proposal in proposals:
            _proposal(ctx, gov, proposal, voter, block)


def _block_seconds(ctx: Context, block: int, span: int = 20) -> float | None:
    """Average seconds per block over the last ``span`` blocks; None on a chain idle between transactions."""
    assert ctx.chain is not None
    if block <= span:
        return None
    try:
        latest = int(ctx.chain.w3.eth.get_block(block)["timestamp"])
        earlier = int(ctx.chain.w3.eth.get_block(block - span)["timestamp"])
    except Exception:  # noqa: BLE001 - a hint only; the page works without it
        return None
    pace = (latest - earlier) / span
    # A chain that mines only on transactions has no pace: its last block is older than a few intervals.
    if not 0 < pace <= 60 or time.time() - latest > max(3 * pace, 10):
        return None
    return pace


def _blocks(count: int) -> str:
    return f"{count} block" if count == 1 else f"{count} blocks"


def short_id(pid: int) -> str:
    text = str(pid)
    return text if len(text) <= 14 else f"{text[:6]}…{text[-6:]}"


def _proposal(ctx: Context, gov: Governance, p: Proposal, voter: str | None, block: int) -> None:
    symbol = ctx.symbol
    title = f"{p.title} — {p.state.name}"
    with st.expander(
        title, expanded=p.state in (ProposalState.Active, ProposalState.Succeeded, ProposalState.Queued)
    ):
        st.caption(f"Proposal id `{p.id}` · proposed by `{p.proposer}` in block {p.created_block}")
        for action in p.actions:
            st.markdown(f"- {action.summary}")
        if p.description.strip() != p.title:
            st.markdown(p.description)
        unit = f" ({symbol})" if symbol else ""
        cols = st.columns(5)
        cols[0].metric(f"For{unit}", fmt_amount(p.for_votes), help=fmt_tokens(p.for_votes, symbol, digits=18))
        cols[1].metric(
            f"Against{unit}", fmt_amount(p.against_votes), help=fmt_tokens(p.against_votes, symbol, digits=18)
        )
        cols[2].metric(
            f"Abstain{unit}", fmt_amount(p.abstain_votes), help=fmt_tokens(p.abstain_votes, symbol, digits=18)
        )
        cols[3].metric(f"Quorum{unit}", fmt_amount(p.quorum), help="For + Abstain must reach it")
        if p.state == ProposalState.Pending:
            cols[4].metric(
                "Voting starts",
                f"block {p.snapshot + 1}",
                help=f"{max(p.snapshot + 1 - block, 0)} block(s) to go",
            )
        elif block <= p.deadline:
            cols[4].metric("Deadline", f"block {p.deadline}", help=f"{p.deadline - block} block(s) left")
        else:
            cols[4].metric("Deadline", f"block {p.deadline}", help="voting has ended")
        if p.for_votes or p.against_votes or p.abstain_votes:
            st.plotly_chart(
                charts.vote_tally(
                    tokens(p.for_votes), tokens(p.against_votes), tokens(p.abstain_votes), tokens(p.quorum)
                ),
                width="stretch",
                key=f"tally-{p.id}",
                config=charts.MODEBAR_OFF,
            )
        st.progress(
            min(p.quorum_votes / p.quorum, 1.0) if p.quorum else 0.0,
            text=f"Quorum: {fmt_amount(p.quorum_votes)} of {fmt_amount(p.quorum)} {symbol}".rstrip(),
        )

        if p.state == ProposalState.Active:
            if voter is None:
                st.info("Sign in with your wallet to vote.")
            else:
                if p.has_voted:
                    st.success("You have voted on this proposal.")
                if keep_showing(f"vote-{p.id}", not p.has_voted):
                    choice = st.radio(
                        "Your vote",
                        [s.name for s in VoteType],
                        index=1,
                        horizontal=True,
                        key=f"support-{p.id}",
                        disabled=bool(p.has_voted),
                    )
                    st.caption(f"Your votes at the snapshot: {fmt_tokens(p.voting_power or 0, symbol)}")
                    transaction_button(
                        ctx,
                        key=f"tx-vote-{p.id}",
                        label=f"Vote {choice}",
                        to=gov.address,
                        data=gov.cast_vote_calldata(p.id, VoteType[choice]),
                        sender=voter,
                        describe=f"Vote {choice} on “{p.title}”",
                        disabled=bool(p.has_voted),
                        simulate=not p.has_voted,
                    )
        # Queue and Execute stay rendered after they were offered, as Vote does: the state they change would
        # hide them, and the wallet's answer (the "confirmed in block" and "Your transactions" entry)
        # reaches Python only through the component that sent the transaction.
        succeeded = p.state == ProposalState.Succeeded
        if voter and keep_showing(f"queue-{p.id}", succeeded):
            if succeeded:
                st.caption("The proposal passed: queue it in the timelock (anyone may).")
            transaction_button(
                ctx,
                key=f"tx-queue-{p.id}",
                label="Queue",
                to=gov.address,
                data=gov.queue_calldata(p),
                sender=voter,
                describe=f"Queue “{p.title}”",
                disabled=not succeeded,
                simulate=succeeded,
            )
        # The chain's clock decides (the timelock checks the block's timestamp), not this machine's.
        wait = p.eta - ctx.chain.next_block_time() if p.state == ProposalState.Queued and ctx.chain else 0
        if wait > 0:
            st.caption(f"Queued: executable in {wait} s (timelock).")
        executable = p.state == ProposalState.Queued and wait <= 0
        if voter and keep_showing(f"execute-{p.id}", executable):
            transaction_button(
                ctx,
                key=f"tx-execute-{p.id}",
                label="Execute",
                to=gov.address,
                data=gov.execute_calldata(p),
                sender=voter,
                describe=f"Execute “{p.title}”",
                disabled=not executable,
                simulate=executable,
            )


def _create(ctx: Context, gov: Governance, voter: str | None) -> None:
    symbol = ctx.symbol
    specs = settable_specs()
    spec = st.selectbox(
        "Parameter",
        specs,
        format_func=lambda s: s.label,
        key="gov-param",
        index=next(i for i, s in enumerate(specs) if s.name == "strategy"),
    )
    current = gov.current_value(spec)
    st.caption(f"Current value: **{spec.from_raw(current, symbol)}**")
    key = f"gov-value-{spec.name}"
    if spec.kind == "choice":
        value: object = st.selectbox(
            "New value", spec.choices, index=min(current, len(spec.choices) - 1), key=key
        )
    elif spec.kind == "bool":
        value = st.toggle("Enabled", value=bool(current), key=key)
    elif spec.kind == "int":
        value = st.number_input("New value", min_value=0, value=current, step=1, key=key)
    else:
        value = st.text_input(
            f"New value ({'tokens' if spec.kind == 'token' else 'decimal'})",
            value=spec.from_raw(current).split(" ")[0].replace(",", ""),
            key=key,
        )
    try:
        raw = spec.to_raw(value)
    except ValueError as exc:
        st.error(str(exc))
        return
    default = f"Set {spec.name} to {spec.from_raw(raw, symbol)}"
    description = st.text_area("Description", placeholder=default, key="gov-description").strip() or default
    calldata = gov.set_parameter_calldata(spec, raw)
    target = gov.parameters.address
    pid = proposal_id([target], [0], [calldata], description)
    st.caption(f"ProtocolParameters.setParameter({spec.index}, {raw}) · proposal id `{pid}`")
    if voter is None:
        st.info("Sign in with your wallet to submit a proposal.")
        return
    if raw == current:
        st.caption("The new value equals the current one.")
    transaction_button(
        ctx,
        key="tx-propose",
        label="Submit proposal",
        to=gov.address,
        data=gov.propose_calldata([target], [0], [calldata], description),
        sender=voter,
        describe=f"Propose “{description}”",
        disabled=raw == current,
    )
    st.caption(f"Proposer {short_address(voter)} · threshold {fmt_tokens(gov.proposal_threshold(), symbol)}")
