"""The deployments file is enough to reach and use every contract on a real node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

from fedledger.chain import param_table
from fedledger.chain.deployments import CONTRACT_NAMES, Deployments, DeploymentsError
from fedledger.chain.params import WAD, ParameterMismatch, from_raw, read_params
from fedledger.devkeys import AGGREGATOR_INDEX, DEPLOYER_INDEX, dev_private_key

pytestmark = pytest.mark.chain


def test_deployments_file_reaches_every_contract(w3: Web3, deployments: Deployments) -> None:
    deployments.check_chain(w3)
    assert deployments.chain_id == 31337
    for name in CONTRACT_NAMES:
        assert w3.eth.get_code(deployments.addresses[name]), name
    token = deployments.contract(w3, "RewardToken")
    assert token.functions.symbol().call() == "DALLA"
    # The genesis supply, plus what claims minted since (the session's chain is shared: tests that ran
    # before this one may have claimed rewards, and only a claim mints).
    distributor = deployments.contract(w3, "RewardDistributor")
    claims = distributor.events.Claimed().get_logs(from_block=deployments.deploy_block)
    minted = sum(log["args"]["amount"] for log in claims)
    assert token.functions.totalSupply().call() == 1_000_000 * WAD + minted


def test_roles_sit_where_the_architecture_says(w3: Web3, deployments: Deployments) -> None:
    timelock = deployments.addresses["Timelock"]
    deployer = Account.from_key(dev_private_key(DEPLOYER_INDEX)).address
    aggregator = Account.from_key(dev_private_key(AGGREGATOR_INDEX)).address
    for name in ("RewardToken", "ProtocolParameters", "ParticipantRegistry", "ContributionLedger"):
        contract = deployments.contract(w3, name)
        admin = contract.functions.DEFAULT_ADMIN_ROLE().call()
        assert contract.functions.hasRole(admin, timelock).call(), name
        assert not contract.functions.hasRole(admin, deployer).call(), name
        assert not contract.functions.hasRole(admin, aggregator).call(), name
    ledger = deployments.contract(w3, "ContributionLedger")
    assert ledger.functions.hasRole(ledger.functions.AGGREGATOR_ROLE().call(), aggregator).call()
    registry = deployments.contract(w3, "ParticipantRegistry")
    assert registry.functions.hasRole(registry.functions.SLASHER_ROLE().call(), aggregator).call()
    # Governance may cancel rewards in their dispute window; the distributor has no admin at all.
    assert ledger.functions.hasRole(ledger.functions.GUARDIAN_ROLE().call(), timelock).call()
    distributor = deployments.contract(w3, "RewardDistributor")
    assert distributor.functions.ledger().call() == ledger.address
    assert ledger.functions.distributor().call() == distributor.address


def test_governed_parameters_read_in_python_units(w3: Web3, deployments: Deployments) -> None:
    params = read_params(deployments.contract(w3, "ProtocolParameters"))
    assert params.text("strategy") == "fltrust_guarded"
    assert params.text("weighting") == "samples"
    assert [params.real(f"weight_{w}") for w in ("quality", "timeliness", "honesty")] == pytest.approx(
        [0.4, 0.3, 0.3]
    )
    assert [tier for pair in params.reward_tiers for tier in pair] == pytest.approx(
        [90, 2.0, 80, 1.5, 70, 1.0, 60, 0.5]
    )
    assert params.integer("base_reward") == 100 * WAD
    assert params.real("dp_delta") == pytest.approx(1e-5)
    assert params.flag("dp_enabled") is False
    assert "reserved_4" not in params and "slash_fitness_below" not in params
    with pytest.raises(TypeError, match="enum parameter, not an integer"):
        params.integer("strategy")


def test_the_parameter_table_is_the_deployed_contract(w3: Web3, deployments: Deployments) -> None:
    """Names, order and ranges of the Python table equal the contract's (its genesis: a fresh deployment)."""
    contract = deployments.contract(w3, "ProtocolParameters")
    assert list(contract.functions.names().call()) == [p.name for p in param_table.table()]
    assert contract.functions.PARAM_COUNT().call() == len(param_table.table())
    fresh = w3.eth.contract(abi=contract.abi, bytecode=_bytecode("ProtocolParameters"))
    account = w3.eth.accounts[0]
    receipt = w3.eth.wait_for_transaction_receipt(fresh.constructor(account).transact({"from": account}))
    genesis = w3.eth.contract(address=receipt["contractAddress"], abi=contract.abi)
    assert genesis.functions.getAll().call() == [p.raw_default for p in param_table.table()]
    bucket = param_table.param("bucket_size")
    with pytest.raises(ContractLogicError):
        genesis.functions.setParameter(bucket.index, bucket.raw_max + 1).call({"from": account})


def _bytecode(name: str) -> str:
    artifact = (
        Path(__file__).parents[2] / "blockchain" / "artifacts" / "contracts" / f"{name}.sol" / f"{name}.json"
    )
    return str(json.loads(artifact.read_text())["bytecode"])


def test_parameter_names_are_checked_not_assumed(w3: Web3, deployments: Deployments) -> None:
    contract = deployments.contract(w3, "ProtocolParameters")
    names = list(contract.functions.names().call())
    values = list(contract.functions.getAll().call())
    names[12], names[13] = names[13], names[12]
    with pytest.raises(ParameterMismatch, match="names"):
        from_raw(names, values)


def test_deployments_refuse_another_chain(w3: Web3, deployments: Deployments) -> None:
    other = Deployments(**{**deployments.__dict__, "chain_id": 1})
    with pytest.raises(DeploymentsError, match="chain 1 but the RPC serves chain 31337"):
        other.check_chain(w3)


def test_deployments_file_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DeploymentsError, match="deploy the contracts first"):
        Deployments.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeploymentsError, match="not valid JSON"):
        Deployments.load(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"chainId": 1, "deployBlock": 0, "contracts": {}}))
    with pytest.raises(DeploymentsError, match="lacks contracts"):
        Deployments.load(tmp_path / "partial.json")
