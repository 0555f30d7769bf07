from __future__ import annotations

from typing import Annotated

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Path
from pydantic import BaseModel
from sqlalchemy import select

from db.models import Contribution, Participant, Round, RoundStatus
from middleware.deps import RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses

router = APIRouter(prefix="/v1/rewards", tags=["rewards"], dependencies=[RateLimited])


class RewardOut(BaseModel):
    round_id: int
    amount_wei: str
    proof: list[str]
    claimed: bool | None  # None while the chain is unreachable


@router.get("/{address}", response_model=list[RewardOut], responses=responses(422, 429))
def rewards(
    address: Annotated[str, Path(max_length=42)], session: SessionDep, state: StateDep
) -> list[RewardOut]:
    """Rewards of ``address`` in rounds posted on-chain, with the Merkle proof to claim each
    (``RewardDistributor.claim(roundId, account, amount, proof)``; anyone may relay it)."""
    if not is_address(address):
        raise ApiError(422, "invalid_address", f"{address!r} is not an Ethereum address")
    account = to_checksum_address(address)
    rows = session.execute(
        select(Contribution.round_id, Contribution.reward_wei, Contribution.merkle_proof)
        .join(Participant, Participant.id == Contribution.participant_id)
        .join(Round, Round.id == Contribution.round_id)
        .where(Participant.address == account, Round.status == RoundStatus.posted)
        .order_by(Contribution.round_id)
    ).all()
    try:
        reader = state.chain()
    except ApiError:
        reader = None
    out = []
    for round_id, amount, proof in rows:
        if int(amount) <= 0:
            continue
        claimed = reader.claimed(round_id, account) if reader is not None else None
        out.append(RewardOut(round_id=round_id, amount_wei=amount, proof=proof, claimed=claimed))
    return out
