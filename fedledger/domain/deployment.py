"""Which chain deployment a database belongs to, checked whenever the API starts and when it first reaches
the node.

The first start on an empty database records the deployment (chain id, ContributionLedger address, deploy
block) and, once the node answers, the hashes of the chain's block 0 and deploy block; every later start and
connection compares. A mismatch means the database outlived its chain (a dev node's state lives in memory, a
PostgreSQL volume does not): its rounds, rewards, stakes and audit anchors would refer to contracts that no
longer exist. A restarted chain redeployed by the same account reuses the addresses, the chain id and the
deploy block number, so only the hashes tell it apart. The API refuses and says how to fix it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import DeploymentBinding
from fedledger.chain.deployments import ChainIdentity, Deployments
from fedledger.domain.errors import Conflict

_FIX = (
    "The chain was probably restarted (a dev node keeps its state in memory): point FEDLEDGER_DATABASE_URL at "
    "a new database, or remove the old one (docker compose down -v drops the volumes), or restore the "
    "original chain."
)


class DeploymentMismatch(Conflict):
    """The database was written for another chain deployment."""


def bind(
    session: Session, deployments: Deployments, identity: ChainIdentity | None = None
) -> DeploymentBinding:
    """Record ``deployments`` (and the chain's ``identity``, when the node was reached) as this database's
    deployment, or check it is the one recorded. A binding made while the node was down gets the hashes at
    the next start that reaches the node."""
    ledger = deployments.addresses["ContributionLedger"]
    deploy_block = int(deployments.deploy_block or 0)
    bound = session.scalars(select(DeploymentBinding).order_by(DeploymentBinding.id)).first()
    if bound is None:
        bound = DeploymentBinding(
            id=1, chain_id=deployments.chain_id, ledger_address=ledger, deploy_block=deploy_block
        )
        if identity is not None:
            bound.genesis_hash = identity.genesis_hash
            bound.deploy_block_hash = identity.deploy_block_hash
        session.add(bound)
        session.flush()
        return bound
    if (bound.chain_id, bound.ledger_address.lower()) != (deployments.chain_id, ledger.lower()):
        raise DeploymentMismatch(
            "deployment_mismatch",
            f"this database belongs to the deployment on chain {bound.chain_id} with ContributionLedger "
            f"{bound.ledger_address} (deploy block {bound.deploy_block}), but the deployments file names chain "
            f"{deployments.chain_id}, ContributionLedger {ledger}. {_FIX}",
        )
    if bound.deploy_block != deploy_block:
        raise DeploymentMismatch(
            "deployment_mismatch",
            f"this database belongs to the deployment made in block {bound.deploy_block}, but the deployments "
            f"file names block {deploy_block}: the contracts were deployed again. {_FIX}",
        )
    if identity is None:
        return bound
    recorded = (bound.genesis_hash, bound.deploy_block_hash)
    if recorded == (None, None):
        bound.genesis_hash = identity.genesis_hash
        bound.deploy_block_hash = identity.deploy_block_hash
        session.flush()
        return bound
    if recorded != (identity.genesis_hash, identity.deploy_block_hash):
        raise DeploymentMismatch(
            "deployment_mismatch",
            f"this database belongs to the chain whose block 0 is {bound.genesis_hash} and deploy block "
            f"{bound.deploy_block} is {bound.deploy_block_hash}, but the node serves {identity.genesis_hash} and "
            f"{identity.deploy_block_hash}: another chain with the same id and contract addresses. {_FIX}",
        )
    return bound


def check(session: Session, deployments: Deployments, identity: ChainIdentity) -> None:
    """:func:`bind`'s comparison without writing (for a request's first chain read, in a read session): a
    database not bound yet, or bound without hashes, passes until a start records them."""
    bound = session.scalars(select(DeploymentBinding).order_by(DeploymentBinding.id)).first()
    if bound is None or bound.genesis_hash is None:
        return
    bind(session, deployments, identity)
