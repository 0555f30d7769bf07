"""Reward Merkle trees, byte-for-byte the trees of OpenZeppelin's ``StandardMerkleTree``.

A leaf is ``keccak256(keccak256(abi.encode(uint256 roundId, address account, uint256 amount)))`` (double
hashing, so a leaf can never be read as an inner node); pairs are hashed sorted, which is what
``MerkleProof.verify`` in ``RewardDistributor`` expects. The tree layout (leaves sorted by hash, array
heap order) follows the JS library so a root computed here equals one computed there.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

LEAF_TYPES = ("uint256", "address", "uint256")


class MerkleError(ValueError):
    """A tree cannot be built from these leaves, or the account has no leaf."""


def leaf_hash(round_id: int, account: str, amount: int) -> bytes:
    """The leaf of ``account``'s reward (``amount`` token wei) in round ``round_id``, hashed as on-chain."""
    return keccak(keccak(encode(list(LEAF_TYPES), [round_id, to_checksum_address(account), amount])))


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class RewardTree:
    """One round's rewards as a Merkle tree: the root goes on-chain, each account claims with its proof."""

    round_id: int
    root: bytes
    _tree: tuple[bytes, ...]
    _index: dict[str, tuple[int, int]]  # checksummed account -> (tree index, amount)

    @classmethod
    def build(cls, round_id: int, rewards: dict[str, int]) -> RewardTree:
        """Build the tree of one round. ``rewards`` maps account to token wei (> 0)."""
        if not rewards:
            raise MerkleError("a reward tree needs at least one leaf")
        normalised: dict[str, int] = {}
        for account, amount in rewards.items():
            checksummed = to_checksum_address(account)
            if checksummed in normalised:
                raise MerkleError(f"account {checksummed} appears twice")
            if amount <= 0:
                raise MerkleError(f"reward of {checksummed} must be positive, got {amount}")
            normalised[checksummed] = int(amount)
        hashed = sorted(
            ((leaf_hash(round_id, a, v), a, v) for a, v in normalised.items()), key=lambda t: t[0]
        )
        size = 2 * len(hashed) - 1
        tree: list[bytes] = [b""] * size
        index: dict[str, tuple[int, int]] = {}
        for i, (h, account, amount) in enumerate(hashed):
            position = size - 1 - i
            tree[position] = h
            index[account] = (position, amount)
        for i in range(size - 1 - len(hashed), -1, -1):
            tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(round_id=round_id, root=tree[0], _tree=tuple(tree), _index=index)

    def proof(self, account: str) -> list[bytes]:
        """Sibling hashes from ``account``'s leaf to the root: the proof ``RewardDistributor.claim`` takes."""
        position, _ = self._entry(account)
        proof: list[bytes] = []
        while position > 0:
            sibling = position - 1 if position % 2 == 0 else position + 1
            proof.append(self._tree[sibling])
            position = (position - 1) // 2
        return proof

    def _entry(self, account: str) -> tuple[int, int]:
        try:
            return self._index[to_checksum_address(account)]
        except KeyError as exc:
            raise MerkleError(f"{account} has no reward in round {self.round_id}") from exc


def verify(root: bytes, leaf: bytes, proof: list[bytes]) -> bool:
    """Check ``proof`` as ``MerkleProof.verify`` does on-chain, so a proof can be tested before it is sent."""
    computed = leaf
    for sibling in proof:
        computed = _hash_pair(computed, sibling)
    return computed == root
