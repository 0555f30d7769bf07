"""Recording rounds on a test chain as the aggregator does, for suites that need a posted round without a
worker. Round ids must grow on-chain and the session chain is shared, so ids come from the ledger itself."""

from __future__ import annotations

import hashlib

from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.ledger import LedgerContribution, record_round_call
from fedledger.chain.merkle import RewardTree
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import AGGREGATOR_INDEX, dev_private_key


def next_round_id(w3: Web3, deployments: Deployments, gap: int = 1) -> int:
    """An id the ledger accepts next: ``gap`` above its latest (a large gap keeps clear of database ids)."""
    return int(deployments.contract(w3, "ContributionLedger").functions.latestRoundId().call()) + gap


def contributions_for(rewards: dict[str, int], scores: int = 9000) -> list[LedgerContribution]:
    return [
        LedgerContribution(
            account, hashlib.sha256(account.encode()).digest(), scores, scores, scores, scores, amount
        )
        for account, amount in rewards.items()
    ]


def record_round(
    w3: Web3,
    deployments: Deployments,
    round_id: int,
    model_hash: bytes,
    rewards: dict[str, int],
    contributions: list[LedgerContribution] | None = None,
) -> RewardTree:
    """The aggregator's on-chain record of a round paying ``rewards`` (account -> token wei)."""
    tree = RewardTree.build(round_id, rewards)
    ledger = deployments.contract(w3, "ContributionLedger")
    send_transaction(
        w3,
        record_round_call(
            ledger, round_id, model_hash, tree.root, contributions or contributions_for(rewards)
        ),
        dev_private_key(AGGREGATOR_INDEX),
    )
    return tree
