"""Rewards: what the API says the organization earned, checked against the chain, then claimed on-chain.

A claim is sent only when its Merkle proof verifies against the root the ``RewardDistributor`` holds for
the round, so a wrong proof fails here with :class:`~client.errors.RewardProofError` instead of costing
gas in a reverted transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from client.api import FedLedgerApi
from client.chain import OrganizationChain, chain_errors
from client.errors import ApiError, RewardProofError
from fedledger.chain.merkle import leaf_hash
from fedledger.chain.merkle import verify as verify_proof

_ZERO_HASH = b"\x00" * 32


@dataclass(frozen=True)
class Reward:
    """One round's reward of this organization, with its Merkle proof, as the API serves it."""

    round_id: int
    amount_wei: int
    proof: tuple[str, ...]
    claimed: bool

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Reward:
        """Parse one entry of ``GET /v1/rewards/{address}``; a malformed one is an :class:`ApiError`."""
        try:
            return cls(
                int(raw["round_id"]),
                int(raw["amount_wei"]),
                tuple(str(p) for p in raw.get("proof", [])),
                bool(raw.get("claimed", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(200, "malformed_response", f"a reward entry is malformed: {exc!r}") from exc


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of one claim."""

    round_id: int
    amount_wei: int
    status: str  # "claimed" | "already_claimed"
    tx_hash: str | None = None


class RewardClaims:
    """The organization's rewards (from the API) and their claims (on-chain, after checking the proof)."""

    def __init__(self, api: FedLedgerApi, chain: OrganizationChain) -> None:
        self.api = api
        self.chain = chain

    @property
    def address(self) -> str:
        """The wallet whose rewards these are."""
        return self.chain.wallet.address

    def rewards(self) -> list[Reward]:
        """Every reward the API lists for this organization."""
        return [Reward.from_api(raw) for raw in self.api.rewards(self.address)]

    def claim(self, reward: Reward) -> ClaimResult:
        """Claim one reward on-chain, after checking its proof against the root the distributor holds."""
        reader = self.chain.reader
        with chain_errors(f"reading round {reward.round_id}'s rewards"):
            if reader.claimed(reward.round_id, self.address):
                return ClaimResult(reward.round_id, reward.amount_wei, "already_claimed")
            root = reader.reward_root(reward.round_id)
        try:
            proof = [bytes.fromhex(p.removeprefix("0x")) for p in reward.proof]
        except ValueError as exc:
            raise RewardProofError(f"round {reward.round_id}: the proof is not hex: {exc}") from None
        if root == _ZERO_HASH:
            raise RewardProofError(f"round {reward.round_id} has no rewards root on-chain (not posted yet)")
        if not verify_proof(root, leaf_hash(reward.round_id, self.address, reward.amount_wei), proof):
            raise RewardProofError(
                f"round {reward.round_id}: the proof for {reward.amount_wei} wei does not verify against the "
                f"on-chain root 0x{root.hex()}; the claim would revert"
            )
        tx = self.chain.send(
            reader.distributor.functions.claim(reward.round_id, self.address, reward.amount_wei, proof),
            f"claiming round {reward.round_id}'s reward",
        )
        return ClaimResult(reward.round_id, reward.amount_wei, "claimed", tx)

    def claim_all(self, round_ids: set[int] | None = None) -> list[ClaimResult]:
        """Claim every unclaimed reward (or those of ``round_ids``)."""
        results = []
        for reward in self.rewards():
            if round_ids is not None and reward.round_id not in round_ids:
                continue
            if reward.claimed:
                results.append(ClaimResult(reward.round_id, reward.amount_wei, "already_claimed"))
                continue
            results.append(self.claim(reward))
        return results
