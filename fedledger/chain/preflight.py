"""What the aggregator account needs on-chain before a worker starts: its roles and gas money.

A worker whose key lacks the roles (the deployer granted them to another address) or has no ETH would take
rounds, aggregate them and then fail every post; it should refuse to start and say what to fix instead.
"""

from __future__ import annotations

from web3 import Web3

from fedledger.chain.deployments import Deployments

# (contract, role) pairs the aggregator's transactions need (deployLib.js grants them).
REQUIRED_ROLES = (
    ("ContributionLedger", "AGGREGATOR_ROLE"),
    ("ParticipantRegistry", "AGGREGATOR_ROLE"),
    ("ParticipantRegistry", "SLASHER_ROLE"),
)


def aggregator_problems(w3: Web3, deployments: Deployments, address: str) -> list[str]:
    """Why ``address`` cannot act as the aggregator of ``deployments`` (empty when it can)."""
    address = Web3.to_checksum_address(address)
    problems = []
    for name, role in REQUIRED_ROLES:
        contract = deployments.contract(w3, name)
        role_id = getattr(contract.functions, role)().call()
        if not contract.functions.hasRole(role_id, address).call():
            problems.append(f"{address} lacks {role} on {name} ({contract.address})")
    if problems:
        problems.append(
            "deploy with FEDLEDGER_AGGREGATOR_ADDRESS set to this key's address, or set "
            "FEDLEDGER_AGGREGATOR_PRIVATE_KEY to the key of the address the deployment names "
            f"({deployments.addresses.get('ContributionLedger')} lists its role holders)"
        )
    if w3.eth.get_balance(address) == 0:
        problems.append(f"{address} has no ETH on chain {deployments.chain_id} to pay gas: fund it")
    return problems
