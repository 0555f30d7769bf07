"""The deploy script and the worker check the aggregator account, as docker compose relies on:

- in production the deployer refuses to give the aggregator roles to a public dev account;
- on a local chain it funds a fresh aggregator address with ETH for gas;
- the worker refuses to start when its key lacks the roles or has no ETH, and says what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from fedledger.chain.devnode import DevChain, DevChainError, free_port
from fedledger.chain.preflight import aggregator_problems
from fedledger.config import PROJECT_ROOT
from fedledger.devkeys import AGGREGATOR_INDEX, dev_private_key

pytestmark = [pytest.mark.chain, pytest.mark.slow]

FRESH = Account.from_key("0x" + "5a" * 32)
# Production deploys need a guardian apart from the servers (blockchain/scripts/deploy.js).
GUARDIAN = Account.from_key("0x" + "6b" * 32)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DevChain]:
    chain = DevChain(port=free_port(), log_path=tmp_path / "chain.log")
    chain.start()
    try:
        yield chain
    finally:
        chain.stop()


def test_production_refuses_a_dev_aggregator_and_a_fresh_one_is_funded(
    node: DevChain, tmp_path: Path
) -> None:
    dev_aggregator = Account.from_key(dev_private_key(AGGREGATOR_INDEX)).address
    with pytest.raises(DevChainError, match="is a public dev account"):
        node.deploy(
            tmp_path / "refused.json",
            env={
                "FEDLEDGER_ENV": "production",
                "FEDLEDGER_GUARDIAN_ADDRESS": GUARDIAN.address,
                "FEDLEDGER_AGGREGATOR_ADDRESS": dev_aggregator,
            },
        )
    with pytest.raises(DevChainError, match="set FEDLEDGER_AGGREGATOR_ADDRESS"):
        node.deploy(
            tmp_path / "refused.json",
            env={
                "FEDLEDGER_ENV": "production",
                "FEDLEDGER_GUARDIAN_ADDRESS": GUARDIAN.address,
                "FEDLEDGER_AGGREGATOR_ADDRESS": "",
            },
        )

    deployments = node.deploy(
        tmp_path / "deployments.json",
        env={
            "FEDLEDGER_ENV": "production",
            "FEDLEDGER_GUARDIAN_ADDRESS": GUARDIAN.address,
            "FEDLEDGER_AGGREGATOR_ADDRESS": FRESH.address,
        },
    )
    w3 = Web3(Web3.HTTPProvider(node.rpc_url))
    assert w3.eth.get_balance(FRESH.address) == Web3.to_wei(100, "ether")
    assert aggregator_problems(w3, deployments, FRESH.address) == []
    problems = aggregator_problems(w3, deployments, dev_aggregator)
    assert any("lacks AGGREGATOR_ROLE on ContributionLedger" in p for p in problems)

    # The worker with the dev key against this deployment: refuses, naming the missing roles.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_")} | {
        "FEDLEDGER_DATA_DIR": str(tmp_path / "var"),
        "FEDLEDGER_CHAIN_RPC_URL": node.rpc_url,
        "FEDLEDGER_DEPLOYMENTS_FILE": str(tmp_path / "deployments.json"),
        "FEDLEDGER_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--no-beat"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "the aggregator account cannot post rounds" in refused.stderr
    assert f"{dev_aggregator} lacks AGGREGATOR_ROLE on ContributionLedger" in refused.stderr

    # A key with the roles but no ETH: refused too.
    broke = Account.from_key("0x" + "6b" * 32)
    assert any("has no ETH" in p for p in aggregator_problems(w3, deployments, broke.address))
