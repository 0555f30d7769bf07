"""Rewards as the database records them: what each participant earned in the rounds posted on-chain.

What the chain says of each (claimed, claimable from when, cancelled) is read by the caller: the database
holds the amounts and the Merkle proofs the worker posted, the chain holds their fate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Contribution, Participant, Round, RoundStatus


@dataclass(frozen=True)
class PostedReward:
    """One round's reward of one account: the leaf amount and its proof under the round's posted root."""

    round_id: int
    amount_wei: str
    proof: list[str]


def posted_rewards(
    session: Session, account: str, *, after: int = 0, limit: int | None = None
) -> list[PostedReward]:
    """The non-zero rewards of ``account`` (checksummed) in posted rounds after round ``after``, oldest round
    first, at most ``limit`` of them (a page: the next one starts after the last round returned).

    A zero leaf is in the tree (the root commits to every contribution) but nothing can be claimed with it:
    it is left out in the query, so a page is never short because of zeros.
    """
    query = (
        select(Contribution.round_id, Contribution.reward_wei, Contribution.merkle_proof)
        .join(Participant, Participant.id == Contribution.participant_id)
        .join(Round, Round.id == Contribution.round_id)
        .where(
            Participant.address == account,
            Round.status == RoundStatus.posted,
            Contribution.round_id > after,
            Contribution.reward_wei != "0",
        )
        .order_by(Contribution.round_id)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = session.execute(query).all()
    return [
        PostedReward(round_id=round_id, amount_wei=amount, proof=proof)
        for round_id, amount, proof in rows
        if int(amount) > 0
    ]
