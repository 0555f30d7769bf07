from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

import requests
from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from web3.exceptions import Web3Exception

from fedledger.chain.reader import RewardStatus, reward_status
from fedledger.domain.rewards import posted_rewards
from middleware.deps import RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses

router = APIRouter(prefix="/v1/rewards", tags=["rewards"], dependencies=[RateLimited])

log = logging.getLogger(__name__)


class RewardOut(BaseModel):
    round_id: int
    amount_wei: str
    proof: list[str]
    claimed: bool | None = Field(description="Claimed on-chain; null while the chain is unreachable")
    claimable_at: datetime | None = Field(
        default=None,
        description=(
            "When the round's dispute window ends and claims are paid (UTC, the chain's block time); null while "
            "the chain is unreachable or records no rewards for the round"
        ),
    )
    status: RewardStatus | None = Field(
        default=None,
        description=(
            "What a claim sent now would meet: claimable; in_dispute_window (paid from claimable_at on, unless "
            "cancelled meanwhile); cancelled (governance or a guardian cancelled the round's rewards in their "
            "dispute window: never paid); claimed. Null while the chain is unreachable or records no rewards "
            "for the round"
        ),
    )


@router.get("/{address}", response_model=list[RewardOut], responses=responses(422, 429))
def rewards(
    address: Annotated[str, Path(max_length=42)], session: SessionDep, state: StateDep
) -> list[RewardOut]:
    """Rewards of ``address`` in rounds posted on-chain, with the Merkle proof to claim each
    (``RewardDistributor.claim(roundId, account, amount, proof)``; anyone may relay it), when each becomes
    claimable and its status on the chain, so that nothing the chain would refuse is offered."""
    if not is_address(address):
        raise ApiError(422, "invalid_address", f"{address!r} is not an Ethereum address")
    account = to_checksum_address(address)
    rows = posted_rewards(session, account)
    on_chain: dict[int, tuple[bool, RewardStatus | None, int]] = {}
    try:
        reader = state.chain()
        # The time of the block a claim sent now would land in: the windows are judged on the chain's clock.
        now = reader.next_block_time() if rows else 0
        for row in rows:
            record = reader.round_rewards(row.round_id)
            claimed = reader.claimed(row.round_id, account)
            on_chain[row.round_id] = (claimed, reward_status(record, claimed, now), record.claimable_at)
    except ApiError:
        pass  # the chain is not reachable or not deployed: what it says is left null
    except (Web3Exception, requests.RequestException, OSError) as exc:
        log.warning("rewards of %s: the chain's reads failed (%s: %s)", account, type(exc).__name__, exc)
        on_chain.clear()
    out = []
    for row in rows:
        reward = RewardOut(round_id=row.round_id, amount_wei=row.amount_wei, proof=row.proof, claimed=None)
        if row.round_id in on_chain:
            claimed, status, claimable_at = on_chain[row.round_id]
            reward.claimed = claimed
            if status is not None:
                reward.status = status
                reward.claimable_at = datetime.fromtimestamp(claimable_at, UTC)
        out.append(reward)
    return out
