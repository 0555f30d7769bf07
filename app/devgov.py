"""Governance that a newcomer can finish on the idle dev chain of ``fedledger run``.

Hardhat mines a block only when a transaction arrives, so on an idle dev chain a proposal would stay
Pending, and one dev wallet's votes (its 10,000-token grant plus rewards) are far below the 4 % quorum.
``fedledger run`` therefore, on the dev chain only:

- deploys the governor with a short voting delay and period and a short timelock delay (:data:`DEV_TIMINGS`);
- mines a block every :data:`BLOCK_SECONDS` seconds (``evm_setIntervalMining``; transactions are still
  mined at once);
- has a few spare dev accounts delegate their votes to the wallet it prints, so that wallet alone reaches
  quorum and can take a proposal from propose to executed in the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import DEV_ACCOUNT_COUNT, dev_private_key

BLOCK_SECONDS = 2.0
# Environment of the deploy script (blockchain/scripts/deployLib.js reads these; blocks and seconds).
DEV_TIMINGS = {
    "FEDLEDGER_GOV_VOTING_DELAY": "1",  # voting opens one block (~2 s) after the proposal
    "FEDLEDGER_GOV_VOTING_PERIOD": "60",  # ~2 minutes to vote
    "FEDLEDGER_TIMELOCK_DELAY": "10",  # seconds between queue and execute
}
# Spare dev accounts (after the simulated organizations) whose votes go to the printed wallet.
DONORS = 4


class DevGovernanceError(RuntimeError):
    """The dev chain refused the set-up (not a dev chain, or a transaction failed)."""


@dataclass(frozen=True)
class DevGovernance:
    voter: str
    votes_wei: int
    quorum_wei: int
    block_seconds: float

    def minutes_to_execute(self, voting_delay: int, voting_period: int, timelock_delay: int) -> float:
        """Propose → executed on this chain, in minutes (blocks at the mining interval, plus the timelock)."""
        return ((voting_delay + voting_period + 1) * self.block_seconds + timelock_delay) / 60


def donor_indices(first_free: int, count: int = DONORS) -> list[int]:
    """The last ``count`` dev accounts not below ``first_free`` (never the deployer, aggregator or signer)."""
    start = max(first_free, DEV_ACCOUNT_COUNT - count)
    return list(range(start, DEV_ACCOUNT_COUNT))


def prepare(
    w3: Web3,
    deployments: Deployments,
    voter_index: int,
    donors: list[int],
    block_seconds: float = BLOCK_SECONDS,
) -> DevGovernance:
    """Start interval mining and delegate the donors' votes to ``voter_index``'s wallet (dev chain only)."""
    if deployments.chain_id not in (31337, 1337):
        raise DevGovernanceError(f"chain {deployments.chain_id} is not a dev chain")
    voter = Account.from_key(dev_private_key(voter_index)).address
    token = deployments.contract(w3, "RewardToken")
    for index in donors:
        if index == voter_index:
            continue
        receipt = send_transaction(w3, token.functions.delegate(voter), dev_private_key(index))
        if receipt["status"] != 1:
            raise DevGovernanceError(f"dev account #{index} could not delegate its votes")
    w3.provider.make_request("evm_setIntervalMining", [int(block_seconds * 1000)])  # type: ignore[arg-type]
    governor = deployments.contract(w3, "FLGovernor")
    latest = w3.eth.block_number
    return DevGovernance(
        voter=voter,
        votes_wei=int(token.functions.getVotes(voter).call()),
        quorum_wei=int(governor.functions.quorum(latest - 1).call()),
        block_seconds=block_seconds,
    )
