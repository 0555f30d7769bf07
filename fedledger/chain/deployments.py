"""The deployments file written by ``blockchain/scripts/deploy.js``: chain id, deploy block, addresses, ABIs.

It is the only thing the Python side needs to talk to the contracts; nothing here hard-codes an address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

CONTRACT_NAMES = (
    "RewardToken",
    "ProtocolParameters",
    "ParticipantRegistry",
    "RewardDistributor",
    "ContributionLedger",
    "FLGovernor",
    "Timelock",
)


class DeploymentsError(RuntimeError):
    """The deployments file is missing, malformed, or for another chain."""


@dataclass(frozen=True)
class ChainIdentity:
    """What tells one chain from another that reuses its id and addresses: the hashes of its block 0 and of
    the deploy block (0x hex). A restarted dev node redeployed by the same account gets the same contract
    addresses, chain id and deploy block number, but blocks with other timestamps, so other hashes."""

    genesis_hash: str
    deploy_block_hash: str


@dataclass(frozen=True)
class Deployments:
    """One deployment's contracts: where they are (chain, addresses, deploy block), how to call them (ABIs).

    ``deploy_block`` bounds event scans from below; ``aggregator`` is the account the deploy script granted
    the aggregator role, when it recorded one.
    """

    chain_id: int
    deploy_block: int
    addresses: dict[str, str]
    abis: dict[str, list[dict[str, Any]]]
    network: str = "unknown"
    governance: dict[str, int] = field(default_factory=dict)
    token: dict[str, str] = field(default_factory=dict)
    aggregator: str | None = None

    @classmethod
    def load(cls, path: Path) -> Deployments:
        """Load ``path``; :class:`DeploymentsError` if it is missing (saying how to deploy) or malformed."""
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise DeploymentsError(
                f"no deployments file at {path}: deploy the contracts first "
                "(`fedledger chain` on the dev chain, or `npx hardhat run scripts/deploy.js --network <net>`)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise DeploymentsError(f"deployments file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(raw, source=f"deployments file {path}")

    @classmethod
    def from_dict(cls, raw: Any, source: str = "deployments") -> Deployments:
        """Parse the deployments document (the file, or what ``GET /v1/chain/deployments`` serves)."""
        try:
            contracts = raw["contracts"]
            missing = [name for name in CONTRACT_NAMES if name not in contracts]
            if missing:
                raise DeploymentsError(f"{source} lacks contracts {missing}; redeploy")
            return cls(
                chain_id=int(raw["chainId"]),
                deploy_block=int(raw["deployBlock"]),
                addresses={n: Web3.to_checksum_address(c["address"]) for n, c in contracts.items()},
                abis={n: c["abi"] for n, c in contracts.items()},
                network=raw.get("network", "unknown"),
                governance={k: int(v) for k, v in raw.get("governance", {}).items()},
                token=dict(raw.get("token", {})),
                aggregator=raw.get("aggregator"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentsError(f"{source} is malformed: {exc!r}") from exc

    def contract(self, w3: Web3, name: str) -> Contract:
        """The named contract bound to ``w3``; an unknown name raises :class:`DeploymentsError`."""
        if name not in self.addresses:
            raise DeploymentsError(f"unknown contract {name!r}; known: {sorted(self.addresses)}")
        return w3.eth.contract(address=Web3.to_checksum_address(self.addresses[name]), abi=self.abis[name])

    def identity(self, w3: Web3) -> ChainIdentity:
        """The hashes of block 0 and of the deploy block on the chain ``w3`` serves (two RPC requests)."""
        genesis = w3.eth.get_block(0)["hash"]
        deploy = w3.eth.get_block(self.deploy_block)["hash"]
        return ChainIdentity(genesis.to_0x_hex(), deploy.to_0x_hex())

    def check_chain(self, w3: Web3) -> None:
        """Refuse to use addresses of one chain on another (a redeployed dev node, a wrong RPC URL)."""
        actual = w3.eth.chain_id
        if actual != self.chain_id:
            raise DeploymentsError(
                f"deployments are for chain {self.chain_id} but the RPC serves chain {actual}"
            )
        token = self.addresses["RewardToken"]
        if not w3.eth.get_code(Web3.to_checksum_address(token)):
            raise DeploymentsError(
                f"no contract code at RewardToken {token}: the chain was reset since the deploy; redeploy"
            )
