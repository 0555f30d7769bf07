"""Flower clients in live fedledger rounds: a real Flower deployment (SuperLink, SuperNodes, `flwr run`)
whose ServerApp runs FedLedgerStrategy pointed at a fedledger platform (Hardhat node, API over HTTP,
PostgreSQL, Redis, a Celery worker). Each ClientApp is the organization's NumPyClient behind the bridge:
it signs in with its wallet, stakes, verifies the platform's model (in round 2, the model round 1 recorded
on-chain), trains, seals, signs and submits. Both rounds are recorded on-chain and the honest organizations
claim their rewards with their own wallets."""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pytest
from eth_account import Account
from web3 import Web3

from client.sdk import Organization
from client.wallet import Wallet
from fedledger.devkeys import FIRST_ORGANIZATION_INDEX, dev_private_key
from tests.worker.conftest import (  # noqa: F401 - fixtures
    chain,
    database_url,
    deployed_chain,
    redis_port,
    settings,
    worker,
)
from tests.worker.test_simulation import api_url  # noqa: F401 - fixture: the API served over HTTP

pytestmark = [
    pytest.mark.celery,
    pytest.mark.chain,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
]

# The deployment's governed rule is the default trimmed mean (beta 0.2), which holds floor(0.2 n) attackers:
# one of five.
CLIENTS, BYZANTINE, ROUNDS = 5, 1, 2


def test_flower_clients_take_part_in_fedledger_rounds_and_claim_their_rewards(
    launcher: ModuleType,
    api_url: str,  # noqa: F811
    chain,  # noqa: F811
    worker,  # noqa: F811
    tmp_path: Path,
) -> None:
    node, deployments, deployments_file = chain
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    keys = [dev_private_key(FIRST_ORGANIZATION_INDEX + i) for i in range(CLIENTS)]
    key_files = []
    for i, key in enumerate(keys):
        path = tmp_path / f"org-{i}.key"
        path.write_text(key)
        key_files.append(str(path))
    operator_key = tmp_path / "operator.key"
    operator_key.write_text(dev_private_key(0))  # the API fixture's operator
    token = deployments.contract(w3, "RewardToken")
    addresses = [Account.from_key(k).address for k in keys]
    before = {a: token.functions.balanceOf(a).call() for a in addresses}

    started = time.monotonic()
    report, seconds = launcher.run_federation(
        clients=CLIENTS,
        byzantine=BYZANTINE,
        attack="scaling",
        rounds=ROUNDS,
        run_config={
            "api-url": api_url,
            "rpc-url": node.rpc_url,
            "deployments": str(deployments_file),
            "operator-key-file": str(operator_key),
            "round-seconds": 300,
        },
        workdir=tmp_path / "flower",
        key_files=key_files,
        node_extra={
            "fedledger-api-url": api_url,
            "fedledger-rpc-url": node.rpc_url,
            "fedledger-deployments": str(deployments_file),
        },
    )
    assert [e["status"] for e in report] == ["POSTED"] * ROUNDS, report
    ledger = deployments.contract(w3, "ContributionLedger")
    round_ids = [e["platform_round"] for e in report]
    assert len(set(round_ids)) == ROUNDS and all(ledger.functions.isRecorded(r).call() for r in round_ids)
    honest, attackers = range(CLIENTS - BYZANTINE), range(CLIENTS - BYZANTINE, CLIENTS)
    earned = dict.fromkeys(range(CLIENTS), 0)
    for entry in report:
        assert entry["holdout_accuracy"] > 0.8
        by_partition = {int(n["metrics"]["partition-id"]): n for n in entry["nodes"]}
        # Round 2 trains on round 1's model, which every bridge verified against its on-chain hash.
        assert set(honest) <= set(by_partition)
        for p, member in by_partition.items():
            assert member["address"] == addresses[p]
            earned[p] += int(member["reward_wei"])
            if p in attackers:
                assert not member["kept"] and member["byzantine"] and member["reward_wei"] == "0"
            else:
                assert member["kept"] and int(member["reward_wei"]) > 0

    stake = 100 * 10**18  # each organization staked the governed minimum when its ClientApp enrolled it
    for p in range(CLIENTS):
        with Organization(
            Wallet(keys[p]), api_url, rpc_url=node.rpc_url, deployments=deployments_file
        ) as org:
            claims = org.claim_rewards()
        if p in honest:
            assert sorted((c.round_id, c.status) for c in claims) == [
                (r, "claimed") for r in sorted(round_ids)
            ]
            assert sum(c.amount_wei for c in claims) == earned[p]
            assert token.functions.balanceOf(addresses[p]).call() == before[addresses[p]] - stake + earned[p]
        else:
            assert claims == []
            assert token.functions.balanceOf(addresses[p]).call() == before[addresses[p]] - stake
    accuracies = [round(e["holdout_accuracy"], 3) for e in report]
    print(
        f"\nFlower platform rounds {round_ids}: holdout accuracy {accuracies}, "
        f"flwr run {seconds:.1f} s, total {time.monotonic() - started:.1f} s"
    )
