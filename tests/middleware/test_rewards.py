"""``GET /v1/rewards/{address}``: each posted round's reward with its proof, when it becomes claimable and its
status on the chain, so a UI offers only what the chain will pay. On a Hardhat node of this module's own, with
a one-hour dispute window and a guardian (tests/chain/dispute.py); the database is SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.chain.tx import send_transaction
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from fedledger.payload import encode_weights
from middleware.app import create_app
from tests.chain import dispute
from tests.chain.dispute import cancel, claimable_at, pass_the_window, posted_in_database, recorded_round
from tests.middleware.conftest import MODEL, OPERATOR, address_of, login

pytestmark = [pytest.mark.chain, pytest.mark.redis]

# This module's own chain (one-hour window, a guardian) replaces the session's for every fixture built on it.
dev_chain, w3, deployments, deployments_file = (
    dispute.dev_chain,
    dispute.w3,
    dispute.deployments,
    dispute.deployments_file,
)

ORG = 3
OTHER = 4


@pytest.fixture
def genesis(client: TestClient) -> None:
    response = client.post("/v1/models", content=encode_weights(MODEL), headers=login(client, OPERATOR))
    assert response.status_code == 201, response.text


def posted(
    settings: Settings, w3: Web3, deployments: Deployments, rewards: dict[int, int]
) -> tuple[int, Any]:
    """A round recorded on-chain and posted in the database, paying dev account index -> token wei."""
    by_address = {address_of(i): amount for i, amount in rewards.items()}
    round_id, tree = recorded_round(w3, deployments, by_address)
    posted_in_database(settings, round_id, tree, by_address)
    return round_id, tree


def claim(w3: Web3, deployments: Deployments, round_id: int, index: int, amount: int, tree: Any) -> None:
    distributor = deployments.contract(w3, "RewardDistributor")
    address = address_of(index)
    send_transaction(
        w3,
        distributor.functions.claim(round_id, address, amount, tree.proof(address)),
        dev_private_key(index),
    )


def at_utc(w3: Web3, deployments: Deployments, round_id: int) -> datetime:
    return datetime.fromtimestamp(claimable_at(w3, deployments, round_id), UTC)


def test_each_reward_says_when_it_becomes_claimable_and_what_the_chain_would_do(
    client: TestClient, settings: Settings, w3: Web3, deployments: Deployments, genesis: None
) -> None:
    cancelled, _ = posted(settings, w3, deployments, {ORG: 4 * WAD, OTHER: WAD})
    cancel(w3, deployments, cancelled)
    ripe, _ = posted(settings, w3, deployments, {ORG: 2 * WAD})
    paid, paid_tree = posted(settings, w3, deployments, {ORG: 3 * WAD, OTHER: WAD})
    pass_the_window(w3)
    claim(w3, deployments, paid, ORG, 3 * WAD, paid_tree)
    pending, _ = posted(settings, w3, deployments, {ORG: 5 * WAD})

    response = client.get(f"/v1/rewards/{address_of(ORG)}", headers=login(client, ORG))
    assert response.status_code == 200, response.text
    rewards = {r["round_id"]: r for r in response.json()["rewards"]}
    assert sorted(rewards) == [cancelled, ripe, paid, pending]
    assert {rid: r["status"] for rid, r in rewards.items()} == {
        cancelled: "cancelled",
        ripe: "claimable",
        paid: "claimed",
        pending: "in_dispute_window",
    }
    for round_id, reward in rewards.items():
        # ISO 8601 in UTC, the chain's claimableAt to the second.
        assert reward["claimable_at"].endswith(("Z", "+00:00")), reward["claimable_at"]
        assert datetime.fromisoformat(reward["claimable_at"]) == at_utc(w3, deployments, round_id)
        # The fields the API served before, unchanged.
        assert reward["claimed"] is (round_id == paid)
        assert isinstance(reward["proof"], list) and all(p.startswith("0x") for p in reward["proof"])
    assert rewards[ripe]["amount_wei"] == str(2 * WAD)
    assert at_utc(w3, deployments, pending) > datetime.now(UTC)

    # Every organization's reward of the cancelled round is cancelled; each account's own claims count.
    served = client.get(f"/v1/rewards/{address_of(OTHER)}", headers=login(client, OTHER)).json()["rewards"]
    other = {r["round_id"]: r["status"] for r in served}
    assert other == {cancelled: "cancelled", paid: "claimable"}

    # Once the chain's time passes the last window, that round is claimable; the cancelled one never is.
    pass_the_window(w3)
    served = client.get(f"/v1/rewards/{address_of(ORG)}", headers=login(client, ORG)).json()["rewards"]
    after = {r["round_id"]: r["status"] for r in served}
    assert after[pending] == "claimable" and after[cancelled] == "cancelled"


def test_without_the_chain_the_chain_fields_are_null(
    settings: Settings, client: TestClient, w3: Web3, deployments: Deployments, genesis: None
) -> None:
    round_id, _ = posted(settings, w3, deployments, {ORG: WAD})
    offline = settings.model_copy(update={"chain_rpc_url": "http://127.0.0.1:9"})
    with TestClient(create_app(offline)) as unreachable:
        response = unreachable.get(f"/v1/rewards/{address_of(ORG)}", headers=login(unreachable, ORG))
    assert response.status_code == 200, response.text
    [reward] = response.json()["rewards"]
    assert reward["round_id"] == round_id and reward["amount_wei"] == str(WAD) and reward["proof"] == []
    assert reward["claimed"] is None and reward["status"] is None and reward["claimable_at"] is None


def test_a_node_that_goes_away_after_start_up_leaves_the_chain_fields_null(
    settings: Settings, w3: Web3, deployments: Deployments, genesis: None
) -> None:
    """The API reached the chain once (its reader is kept), then the node stops answering: the rewards are
    still served, without what only the chain can say (this used to be a 500)."""
    round_id, _ = posted(settings, w3, deployments, {ORG: WAD})
    app = create_app(settings)
    with TestClient(app) as api:
        headers = login(api, ORG)
        first = api.get(f"/v1/rewards/{address_of(ORG)}", headers=headers).json()["rewards"]
        assert [r["status"] for r in first] == ["in_dispute_window"]
        reader = app.state.fl.chain()
        reader.w3.provider.endpoint_uri = "http://127.0.0.1:9"  # the node is gone (nothing listens there)
        response = api.get(f"/v1/rewards/{address_of(ORG)}", headers=headers)
    assert response.status_code == 200, response.text
    [reward] = response.json()["rewards"]
    assert reward["round_id"] == round_id and reward["amount_wei"] == str(WAD)
    assert reward["claimed"] is None and reward["status"] is None and reward["claimable_at"] is None


def test_the_openapi_model_adds_the_fields_and_keeps_the_old_ones(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    reward = schemas["RewardOut"]
    assert set(reward["required"]) >= {"round_id", "amount_wei", "proof", "claimed"}
    assert not {"claimable_at", "status"} & set(reward["required"])
    at = reward["properties"]["claimable_at"]["anyOf"]
    assert {"type": "string", "format": "date-time"} in at and {"type": "null"} in at
    [ref] = [s["$ref"] for s in reward["properties"]["status"]["anyOf"] if "$ref" in s]
    assert schemas[ref.rsplit("/", 1)[1]]["enum"] == [
        "claimable",
        "in_dispute_window",
        "cancelled",
        "claimed",
    ]


ROUNDS = 200


def test_two_hundred_rewarded_rounds_are_served_in_pages_with_a_bounded_number_of_rpc_requests(
    settings: Settings, w3: Web3, deployments: Deployments, genesis: None
) -> None:
    """The attack: one call for an address rewarded in many rounds used to cost ~6 RPC requests a round (1,207
    for 201 rounds, 3.3 s, every other route slowed down meanwhile). Now a page is bounded (at most 100
    rounds) and costs a fixed number of requests, counted here at the API's provider."""
    by_address = {address_of(ORG): 1}
    rounds = []
    for _ in range(ROUNDS):
        round_id, tree = recorded_round(w3, deployments, by_address)
        posted_in_database(settings, round_id, tree, by_address)
        rounds.append(round_id)
    app = create_app(settings)
    with TestClient(app) as api:
        headers = login(api, ORG)
        reader = app.state.fl.chain()
        provider = reader.w3.provider
        sent: list[str] = []
        make_request = provider.make_request

        def counted(method: Any, params: Any) -> Any:
            sent.append(str(method))
            return make_request(method, params)

        provider.make_request = counted  # type: ignore[method-assign]
        served: list[dict[str, Any]] = []
        per_page: list[int] = []
        cursor: int | None = 0
        while cursor is not None:
            before = len(sent)
            response = api.get(f"/v1/rewards/{address_of(ORG)}", params={"cursor": cursor}, headers=headers)
            assert response.status_code == 200, response.text
            per_page.append(len(sent) - before)
            served.extend(response.json()["rewards"])
            cursor = response.json()["next_cursor"]
        too_big = api.get(f"/v1/rewards/{address_of(ORG)}", params={"limit": 101}, headers=headers)
    assert [r["round_id"] for r in served] == rounds
    assert all(r["status"] == "in_dispute_window" and r["claimed"] is False for r in served)
    assert len(per_page) == 2, per_page
    # Two event queries and the latest block a page, whatever the number of rounds on it.
    assert max(per_page) <= 4, (per_page, sent)
    assert too_big.status_code == 422, too_big.text


def test_rewards_are_served_to_the_address_itself_or_an_operator_only(
    client: TestClient, settings: Settings, w3: Web3, deployments: Deployments, genesis: None
) -> None:
    round_id, _ = posted(settings, w3, deployments, {ORG: WAD})
    url = f"/v1/rewards/{address_of(ORG)}"
    anonymous = client.get(url)
    assert anonymous.status_code == 401, anonymous.text
    other_org = client.get(url, headers=login(client, OTHER))
    assert other_org.status_code == 403, other_org.text
    assert other_org.json()["error"] == "not_your_rewards"
    for index in (ORG, OPERATOR):
        response = client.get(url, headers=login(client, index))
        assert response.status_code == 200, response.text
        assert [r["round_id"] for r in response.json()["rewards"]] == [round_id]
