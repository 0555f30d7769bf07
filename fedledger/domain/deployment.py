"""Which chain deployment a database belongs to, checked whenever the API starts.

The first start on an empty database records the deployment (chain id, ContributionLedger address, deploy
block); every later start compares. A mismatch means the database outlived its chain (a dev node's state
lives in memory, a PostgreSQL volume does not): its rounds, rewards and stakes would refer to contracts
that no longer exist, so the API refuses to start and says how to fix it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import DeploymentBinding
from fedledger.chain.deployments import Deployments
from fedledger.domain.errors import Conflict


class DeploymentMismatch(Conflict):
    """The database was written for another chain deployment."""


def bind(session: Session, deployments: Deployments) -> DeploymentBinding:
    """Record ``deployments`` as this database's deployment, or check it is the one recorded."""
    ledger = deployments.addresses["ContributionLedger"]
    deploy_block = int(deployments.deploy_block or 0)
    bound = session.scalars(select(DeploymentBinding).order_by(DeploymentBinding.id)).first()
    if bound is None:
        bound = DeploymentBinding(
            id=1, chain_id=deployments.chain_id, ledger_address=ledger, deploy_block=deploy_block
        )
        session.add(bound)
        session.flush()
        return bound
    if (bound.chain_id, bound.ledger_address.lower()) != (deployments.chain_id, ledger.lower()):
        raise DeploymentMismatch(
            "deployment_mismatch",
            f"this database belongs to the deployment on chain {bound.chain_id} with ContributionLedger "
            f"{bound.ledger_address} (deploy block {bound.deploy_block}), but the deployments file names chain "
            f"{deployments.chain_id}, ContributionLedger {ledger}. The chain was probably restarted (a dev node "
            "keeps its state in memory): point FEDLEDGER_DATABASE_URL at a new database, or remove the old "
            "one (docker compose down -v drops the volumes), or restore the original chain.",
        )
    return bound
