"""Rewards: what the API says the organization earned, checked against the chain, then claimed on-chain.

A claim is sent only when its Merkle proof verifies against the root the ``RewardDistributor`` holds for
the round, so a wrong proof fails here with :class:`~client.errors.RewardProofError` instead of costing
gas in a reverted transaction; and only once the round's dispute window is over (the governed
``DisputeWindow`` after the round was recorded): before that :meth:`RewardClaims.claim` raises
:class:`~client.errors.RewardNotClaimableYetError`, saying when the reward becomes claimable, and
:meth:`RewardClaims.claim_all` skips the round and reports it (status ``not_claimable_yet``). A round whose
rewards governance or a guardian cancelled during that window never pays: :meth:`RewardClaims.claim` raises
:class:`~client.errors.RewardsCancelledError` (nothing is sent) and :meth:`RewardClaims.claim_all` reports
the round (status ``cancelled``) and goes on with the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from client.chain import OrganizationChain, chain_errors
from client.errors import (
    ApiError,
    RewardNotClaimableYetError,
    RewardProofError,
    RewardsCancelledError,
    TransactionFailedError,
)
from fedledger.api.client import FedLedgerApi
from fedledger.api.schemas import RewardOut
from fedledger.chain.merkle import leaf_hash
from fedledger.chain.merkle import verify as verify_proof
from fedledger.chain.reader import RewardStatus, reward_status


@dataclass(frozen=True)
class Reward:
    """One round's reward of this organization, with its Merkle proof, as the API serves it."""

    round_id: int
    amount_wei: int
    proof: tuple[str, ...]
    claimed: bool

    @classmethod
    def from_api(cls, served: RewardOut) -> Reward:
        """One reward as the API serves it; an amount that is not a decimal integer is an :class:`ApiError`."""
        try:
            amount = int(served.amount_wei)
        except ValueError as exc:
            raise ApiError(200, "malformed_response", f"a reward entry is malformed: {exc!r}") from exc
        return cls(served.round_id, amount, tuple(served.proof), bool(served.claimed))


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of one claim.

    ``not_claimable_yet``: the round is in its dispute window; ``claimable_at`` (unix time, UTC) says when
    it ends, ``seconds_left`` how long that is from now, and ``detail`` says so in words.
    ``cancelled``: the round's rewards were cancelled in their dispute window and will never be paid;
    ``detail`` says so.
    """

    round_id: int
    amount_wei: int
    status: str  # "claimed" | "already_claimed" | "not_claimable_yet" | "cancelled"
    tx_hash: str | None = None
    claimable_at: int | None = None
    seconds_left: int | None = None
    detail: str | None = None

    @classmethod
    def not_claimable_yet(cls, reward: Reward, error: RewardNotClaimableYetError) -> ClaimResult:
        """The skipped claim of a reward still in its dispute window."""
        return cls(
            reward.round_id,
            reward.amount_wei,
            "not_claimable_yet",
            claimable_at=error.claimable_at,
            seconds_left=error.seconds_left,
            detail=str(error),
        )

    @classmethod
    def cancelled(cls, reward: Reward, error: RewardsCancelledError) -> ClaimResult:
        """The skipped claim of a reward whose round's rewards were cancelled."""
        return cls(reward.round_id, reward.amount_wei, "cancelled", detail=str(error))


class RewardClaims:
    """The organization's rewards (from the API) and their claims (on-chain, after checking the proof).

    ``clock``: the local time in unix seconds. Whether a dispute window is over is judged against the time
    of the block a claim would land in: the later of the latest block's timestamp + 1 and this clock (a
    node that mined no block for a while has an old latest block; a real chain's next block is about now).
    """

    def __init__(
        self, api: FedLedgerApi, chain: OrganizationChain, clock: Callable[[], float] = time.time
    ) -> None:
        self.api = api
        self.chain = chain
        self.clock = clock

    @property
    def address(self) -> str:
        """The wallet whose rewards these are."""
        return self.chain.wallet.address

    def rewards(self) -> list[Reward]:
        """Every reward the API lists for this organization."""
        return [Reward.from_api(served) for served in self.api.rewards(self.address)]

    def claim(self, reward: Reward) -> ClaimResult:
        """Claim one reward on-chain, after checking its proof against the root the distributor holds.

        Raises :class:`RewardsCancelledError` when the round's rewards were cancelled, and
        :class:`RewardNotClaimableYetError` while the round's dispute window runs; nothing is sent then.
        """
        reader = self.chain.reader
        with chain_errors(f"reading round {reward.round_id}'s rewards"):
            if reader.claimed(reward.round_id, self.address):
                return ClaimResult(reward.round_id, reward.amount_wei, "already_claimed")
            record = reader.round_rewards(reward.round_id)
            now = reader.next_block_time(self.clock)
        # The contract's order of refusals, as the API reports it (fedledger.chain.reader.reward_status).
        status = reward_status(record, claimed=False, now=now)
        if status is RewardStatus.cancelled:
            raise RewardsCancelledError(reward.round_id)
        root = record.root
        try:
            proof = [bytes.fromhex(p.removeprefix("0x")) for p in reward.proof]
        except ValueError as exc:
            raise RewardProofError(f"round {reward.round_id}: the proof is not hex: {exc}") from None
        if status is None:
            raise RewardProofError(f"round {reward.round_id} has no rewards root on-chain (not posted yet)")
        if not verify_proof(root, leaf_hash(reward.round_id, self.address, reward.amount_wei), proof):
            raise RewardProofError(
                f"round {reward.round_id}: the proof for {reward.amount_wei} wei does not verify against the "
                f"on-chain root 0x{root.hex()}; the claim would revert"
            )
        # The contract pays from block.timestamp >= claimableAt on (a round that pays nothing has 0 there).
        if status is RewardStatus.in_dispute_window:
            raise RewardNotClaimableYetError(reward.round_id, record.claimable_at, record.claimable_at - now)
        try:
            tx = self.chain.send(
                reader.distributor.functions.claim(reward.round_id, self.address, reward.amount_wei, proof),
                f"claiming round {reward.round_id}'s reward",
            )
        except TransactionFailedError as exc:
            if exc.error == "RewardsAreCancelled":  # cancelled between the read above and the send
                raise RewardsCancelledError(reward.round_id) from None
            if exc.error != "DisputeWindowOpen":
                raise
            # This clock ran ahead of the chain's: the window is not over in the block the claim would be in.
            with chain_errors("reading the chain's time"):
                chain_now = reader.block_time() + 1
            left = max(record.claimable_at - chain_now, 1)
            raise RewardNotClaimableYetError(reward.round_id, record.claimable_at, left) from None
        return ClaimResult(reward.round_id, reward.amount_wei, "claimed", tx)

    def claim_all(self, round_ids: set[int] | None = None) -> list[ClaimResult]:
        """Claim every unclaimed reward (or those of ``round_ids``).

        A reward still in its round's dispute window is skipped and reported as ``not_claimable_yet`` (with
        when it becomes claimable), one whose round's rewards were cancelled as ``cancelled``; the other
        rounds are claimed all the same.
        """
        results = []
        for reward in self.rewards():
            if round_ids is not None and reward.round_id not in round_ids:
                continue
            if reward.claimed:
                results.append(ClaimResult(reward.round_id, reward.amount_wei, "already_claimed"))
                continue
            try:
                results.append(self.claim(reward))
            except RewardNotClaimableYetError as exc:
                results.append(ClaimResult.not_claimable_yet(reward, exc))
            except RewardsCancelledError as exc:
                results.append(ClaimResult.cancelled(reward, exc))
        return results
