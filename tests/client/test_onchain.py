"""What the client checks against the chain: a round's model hash in the ContributionLedger, and reward
proofs against the RewardDistributor's root (rounds recorded here as the aggregator records them)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web3 import Web3

from client.errors import ModelVerificationError, RewardProofError
from client.sdk import Organization, Reward
from db.base import utcnow
from db.models import Round, RoundStatus
from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.config import Settings
from fedledger.domain import model_versions as model_service
from fedledger.payload import decode_weights, encode_weights
from tests.chain.ledger import record_round
from tests.client.conftest import CLIENT_ORGS, unique_round_id

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


def new_version_from_round(
    client: TestClient, settings: Settings, deployments: Deployments, round_id: int
) -> dict[str, Any]:
    """What a posted round leaves behind: a new active model version produced by ``round_id``."""
    state = client.app.state.fl
    with state.sessions.begin() as session:
        parent = model_service.require_active(session)
        session.add(
            Round(
                id=round_id,
                status=RoundStatus.posted,
                model_version_id=parent.id,
                deadline=utcnow(),
                quorum=1,
                strategy="fedavg",
                params={},
            )
        )
        session.flush()
        weights = {k: v + 0.25 for k, v in decode_weights(state.blobs.get(parent.weights_hash)).items()}
        version = model_service.store_version(
            session,
            state.blobs,
            encode_weights(weights),
            signer_key=settings.resolved_model_signer_key,
            chain_id=deployments.chain_id,
            verifying_contract=deployments.addresses["ContributionLedger"],
            parent=parent,
            produced_by_round_id=round_id,
        )
        return {"version": version.id, "weights_hash": version.weights_hash}


def test_a_round_model_is_verified_against_the_ledger(
    make_org,
    client: TestClient,
    settings: Settings,
    w3: Web3,
    deployments: Deployments,
    genesis: dict[str, Any],  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[3])
    round_id = unique_round_id(w3, deployments)
    produced = new_version_from_round(client, settings, deployments, round_id)
    # Signed by the trusted signer, hash right, but the chain has no record of the round (yet): refused.
    with pytest.raises(ModelVerificationError, match=f"round {round_id}, which is not recorded on-chain"):
        org.pull_model()
    record_round(w3, deployments, round_id, bytes.fromhex(produced["weights_hash"]), {org.address: WAD})
    model = org.pull_model()
    assert (
        model.version == produced["version"]
        and model.produced_by_round == round_id
        and model.onchain_verified
    )

    # The server's database says round R2 produced a model, but the chain recorded another hash for R2.
    other_round = unique_round_id(w3, deployments)
    forked = new_version_from_round(client, settings, deployments, other_round)
    record_round(
        w3,
        deployments,
        other_round,
        hashlib.sha256(b"the model the aggregator really posted").digest(),
        {org.address: WAD},
    )
    with pytest.raises(ModelVerificationError, match=f"the chain records sha256:.* for round {other_round}"):
        org.pull_model(forked["version"])


def test_rewards_are_claimed_once_with_a_locally_checked_proof(
    make_org,
    w3: Web3,
    deployments: Deployments,
    genesis: dict[str, Any],  # type: ignore[no-untyped-def]
) -> None:
    org: Organization = make_org(CLIENT_ORGS[4])
    peer = make_org(CLIENT_ORGS[3])
    round_id = unique_round_id(w3, deployments)
    amounts = {org.address: 3 * WAD, peer.address: 2 * WAD}
    tree = record_round(w3, deployments, round_id, hashlib.sha256(b"model").digest(), amounts)
    proof = tuple("0x" + p.hex() for p in tree.proof(org.address))
    token = deployments.contract(w3, "RewardToken")
    inflated = Reward(round_id, 4 * WAD, proof, claimed=False)
    with pytest.raises(RewardProofError, match="does not verify against the on-chain root"):
        org.claim_reward(inflated)
    before = token.functions.balanceOf(org.address).call()
    result = org.claim_reward(Reward(round_id, 3 * WAD, proof, claimed=False))
    assert (
        result.status == "claimed"
        and result.tx_hash
        and token.functions.balanceOf(org.address).call() - before == 3 * WAD
    )
    again = org.claim_reward(Reward(round_id, 3 * WAD, proof, claimed=False))
    assert (
        again.status == "already_claimed"
        and token.functions.balanceOf(org.address).call() - before == 3 * WAD
    )
    with pytest.raises(RewardProofError, match="no rewards root"):
        org.claim_reward(Reward(unique_round_id(w3, deployments), WAD, proof, claimed=False))
