from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

import requests
from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Path, Query
from web3.exceptions import Web3Exception

from fedledger.api.schemas import RewardOut, RewardsPage
from fedledger.chain.reader import RewardStatus, reward_status
from fedledger.domain.rewards import posted_rewards
from middleware.deps import MAX_ID, CurrentPrincipal, RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses

router = APIRouter(prefix="/v1/rewards", tags=["rewards"])

log = logging.getLogger(__name__)


MAX_PAGE = 100


@router.get(
    "/{address}",
    response_model=RewardsPage,
    responses=responses(401, 403, 422, 429),
    dependencies=[RateLimited],
)
def rewards(
    address: Annotated[str, Path(max_length=42)],
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    cursor: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> RewardsPage:
    """Rewards of ``address`` in rounds posted on-chain, oldest first, a page at a time (rounds after
    ``cursor``), with the Merkle proof to claim each (``RewardDistributor.claim(roundId, account, amount,
    proof)``; anyone may relay it), when each becomes claimable and its status on the chain, so that nothing
    the chain would refuse is offered. Only the address's own token, or an operator's.

    The chain is read with a fixed number of requests a page (two event queries and the latest block), never
    per round: one call used to cost ~6 RPC requests a rewarded round."""
    if not is_address(address):
        raise ApiError(422, "invalid_address", f"{address!r} is not an Ethereum address")
    account = to_checksum_address(address)
    if principal.address != account and not principal.is_operator:
        raise ApiError(
            403, "not_your_rewards", "a token reads only its own address's rewards (or an operator's)"
        )
    rows = posted_rewards(session, account, after=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    on_chain: dict[int, tuple[bool, RewardStatus | None, int]] = {}
    try:
        reader = state.chain()
        if rows:
            # The time of the block a claim sent now would land in: the windows are judged on the chain's clock.
            now = reader.next_block_time()
            records, claimed = reader.rewards_of([row.round_id for row in rows], account)
            for row in rows:
                record = records.get(row.round_id)
                is_claimed = row.round_id in claimed
                if record is None:
                    on_chain[row.round_id] = (is_claimed, None, 0)
                else:
                    status = reward_status(record, is_claimed, now)
                    on_chain[row.round_id] = (is_claimed, status, record.claimable_at)
    except ApiError:
        pass  # the chain is not reachable or not deployed: what it says is left null
    except (Web3Exception, requests.RequestException, OSError) as exc:
        log.warning("rewards of %s: the chain's reads failed (%s: %s)", account, type(exc).__name__, exc)
        on_chain.clear()
    out = []
    for row in rows:
        reward = RewardOut(round_id=row.round_id, amount_wei=row.amount_wei, proof=row.proof, claimed=None)
        if row.round_id in on_chain:
            claimed_now, status, claimable_at = on_chain[row.round_id]
            reward.claimed = claimed_now
            if status is not None:
                reward.status = status
                reward.claimable_at = datetime.fromtimestamp(claimable_at, UTC)
        out.append(reward)
    return RewardsPage(rewards=out, next_cursor=rows[-1].round_id if more else None)
