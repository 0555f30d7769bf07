"""Each dashboard page rendered by Streamlit's AppTest against a real API (HTTP) and the real dev chain."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from streamlit.testing.v1 import AppTest
from web3 import Web3

from aggregator.round.compute import CloseStatus, RoundResult
from aggregator.worker.close import Signing, commit
from db.base import utcnow
from db.models import Round, RoundStatus
from db.session import session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.chain.tx import send_transaction
from fedledger.devkeys import dev_private_key
from fedledger.domain.blobstore import FilesystemBlobStore
from tests.middleware.conftest import ORGS, World, address_of
from tests.visualization.conftest import (
    ApiServer,
    close_round_as_the_worker_would,
    dashboard_account,
    open_next_round,
)
from visualization.data import fmt_amount, fmt_exact
from visualization.governance import Governance, proposal_id, spec_by_name
from visualization.tables import short

pytestmark = pytest.mark.chain

APP = str(Path(__file__).resolve().parents[2] / "visualization" / "app.py")


def run_page(page: str, auth: dict[str, Any] | None = None, **state: Any) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["page"] = page
    if auth is not None:
        at.session_state["auth"] = auth
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_readable(table: Any) -> None:
    """No empty cell and no "None"/"nan" text: a missing figure reads as a dash."""
    assert not table.isna().any().any(), table
    text = table.astype(str)
    assert not text.isin(["None", "nan", "NaT", "<NA>"]).any().any(), table


def _order(table: Any) -> list[int]:
    names = {f"org {i}": i for i in (*ORGS, 17, 18)}
    return [names[n] for n in table["Organization"]]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(at: AppTest) -> str:
    """Every piece of rendered text (markdown, captions, alerts, progress labels), joined."""
    parts: list[str] = []
    for kind in (
        "markdown",
        "caption",
        "info",
        "warning",
        "error",
        "success",
        "title",
        "subheader",
        "header",
    ):
        parts.extend(str(e.value) for e in at.get(kind))
    for progress in at.get("progress"):
        parts.append(str(progress.proto.text))
    for expander in at.get("expander"):
        parts.append(str(expander.proto.label))
    return "\n".join(parts)


def charts(at: AppTest) -> list[dict[str, Any]]:
    return [_decoded(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")]


def _decoded(value: Any) -> Any:
    """Plotly's JSON with its typed arrays (``{"dtype", "bdata"}``) turned back into lists."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


# The live API shares the machine with the suite's other worker and its chain: httpx's default 5 s read
# timeout was once exceeded by a login under that load (a flake, not a fault of the code under test).
LIVE_API_TIMEOUT = 30.0


def http_login(api: ApiServer, index: int) -> dict[str, Any]:
    """What the wallet flow leaves in the session: a JWT from the real nonce/login exchange."""
    key = dev_private_key(index)
    address = Account.from_key(key).address
    nonce = httpx.post(f"{api.url}/v1/auth/nonce", json={"address": address}, timeout=LIVE_API_TIMEOUT)
    nonce.raise_for_status()
    challenge = nonce.json()
    signature = Account.sign_message(encode_defunct(text=challenge["message"]), key).signature.to_0x_hex()
    login = httpx.post(
        f"{api.url}/v1/auth/login",
        json={"message": challenge["message"], "signature": signature},
        timeout=LIVE_API_TIMEOUT,
    )
    login.raise_for_status()
    token = login.json()
    return {
        "token": token["access_token"],
        "address": token["address"],
        "expires_at": token["expires_at"],
        "roles": token["roles"],
    }


# ------------------------------------------------------------------------------------------ overview


def test_overview_before_anything_exists(dashboard_env: ApiServer) -> None:
    at = run_page("Overview")
    shown = metrics(at)
    assert shown["Active organizations"] == "0"
    assert shown["Total contributions"] == "0"
    assert shown["Model version"] == "—"
    text = texts(at)
    assert "No round has been opened yet" in text
    assert "No model yet" in text
    assert "No organization has registered yet" in text


def test_overview_shows_the_live_round_model_and_organizations(
    world: World, dashboard_env: ApiServer, w3: Web3, deployments: Deployments
) -> None:
    at = run_page("Overview")
    shown = metrics(at)
    # The world registers ORGS, and SLASHED unless an earlier test of the session slashed it.
    registered = world.client.get("/v1/stats/overview").json()["active_participants"]
    assert registered in (len(ORGS), len(ORGS) + 1)
    assert shown["Active organizations"] == str(registered)
    assert shown["Model version"] == "v1"
    assert shown["Rounds completed"] == "0"
    registry = deployments.contract(w3, "ParticipantRegistry")
    assert shown["Enrolled on-chain"] == str(registry.functions.activeCount().call())
    token = deployments.contract(w3, "RewardToken")
    assert shown["Total supply (DALLA)"] == fmt_amount(token.functions.totalSupply().call())
    text = texts(at)
    assert f"Round {world.round['id']}" in text and "OPEN" in text
    assert "Updates received: 0 of quorum 3" in text
    model = world.client.get("/v1/models/current").json()
    assert model["weights_hash"] in text
    # The organizations table lists every registered organization by name, with no empty cell.
    table = at.dataframe[0].value
    listed = [p["org_name"] for p in world.client.get("/v1/stats/participants").json()]
    assert sorted(table["Organization"]) == sorted(listed)
    assert {f"org {i}" for i in ORGS} <= set(listed) <= {f"org {i}" for i in (*ORGS, 18)}
    assert_readable(table)
    assert table["Registered (UTC)"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d").all()
    assert (table["Wallet"] == [short(address_of(i)) for i in _order(table)]).all()

    # An update arrives: the round's progress follows.
    close_round_as_the_worker_would(world, dashboard_env.settings)
    following = open_next_round(world)
    at = run_page("Overview")
    shown = metrics(at)
    assert shown["Model version"] == "v2"
    assert shown["Rounds completed"] == "1"
    assert shown["Total contributions"] == "3"
    assert f"Round {following['id']}" in texts(at)


# ------------------------------------------------------------------------------------------ training


def test_training_waits_for_a_first_aggregation_then_charts_it(
    world: World, dashboard_env: ApiServer
) -> None:
    at = run_page("Training")
    assert "none aggregated yet" in texts(at)
    assert not at.get("plotly_chart")

    closed = close_round_as_the_worker_would(world, dashboard_env.settings)
    at = run_page("Training")
    shown = metrics(at)
    assert shown["Aggregated rounds"] == "1"
    assert shown["Latest accuracy"] == "87.00%"
    assert shown["Latest holdout loss"] == "0.4100"
    figures = {f["layout"]["title"]["text"]: f for f in charts(at)}
    accuracy = figures["Holdout accuracy and loss per round"]["data"]
    assert accuracy[0]["y"] == [closed.accuracy] and accuracy[1]["y"] == [closed.loss_after]
    kept = figures["Updates kept, excluded and rejected per round"]["data"]
    assert [trace["y"] for trace in kept] == [[2], [1], [0]]
    # Box colours mean something: kept updates in one colour, excluded ones in another, with a legend.
    fitness = {
        trace["name"]: trace for trace in figures["Fitness per round: kept and excluded updates"]["data"]
    }
    assert sorted(fitness["kept"]["y"]) == sorted(closed.fitness[a] for a in closed.kept)
    assert sorted(fitness["excluded"]["y"]) == sorted(closed.fitness[a] for a in closed.excluded)
    assert fitness["kept"]["marker"]["color"] != fitness["excluded"]["marker"]["color"]
    # The loss axis has its own round ticks (not synced to the accuracy grid).
    loss_axis = figures["Holdout accuracy and loss per round"]["layout"]["yaxis2"]
    assert loss_axis["tickmode"] == "auto" and loss_axis["tickformat"] == ".2f"
    privacy = figures["Privacy budget spent"]
    assert privacy["data"][0]["y"] == [closed.epsilon_spent]
    # The governed budget (ProtocolParameters.dp_epsilon_budget, 10 at deploy) is the reference line.
    assert privacy["layout"]["shapes"][0]["y0"] == 10.0
    assert "ε spent 1.25 of budget 10" in texts(at)
    rounds = at.dataframe[0].value
    assert list(rounds.columns[:3]) == ["Round", "Status", "Strategy"]
    assert_readable(rounds)
    row = rounds[rounds["Round"] == closed.round_id].iloc[0]
    assert (row["Kept"], row["Excluded"], row["Accuracy"], row["Rolled back"]) == ("2", "1", "87.0%", "no")


def test_a_round_posted_after_a_deadline_extension_shows_no_failure(
    world: World, dashboard_env: ApiServer
) -> None:
    """Issue 22 item 3: round 6 was POSTED, yet "Why it failed" said "only 2 usable updates of the 3
    needed; deadline extended": the extension's note was kept as the failure reason."""
    settings, round_id = dashboard_env.settings, world.round["id"]
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:  # the worker holds the round's close
        held = session.get(Round, round_id)
        assert held is not None
        held.status, held.lease_owner = RoundStatus.closing, "worker-1"
        held.lease_until = utcnow() + timedelta(seconds=60)
    note = "only 2 usable updates of the 3 needed; deadline extended"
    extended = RoundResult(CloseStatus.extended, note, extend_to=utcnow() + timedelta(minutes=10))
    signing = Signing(
        settings.resolved_model_signer_key, 31337, world.deployments.addresses["ContributionLedger"]
    )
    assert commit(
        sessions, FilesystemBlobStore(settings.resolved_blob_dir), round_id, "worker-1", extended, signing
    )
    with sessions() as session:
        reopened = session.get(Round, round_id)
        assert reopened is not None and reopened.status == RoundStatus.open and reopened.extensions == 1
        assert reopened.failure_reason is None
    assert "failed" not in texts(run_page("Overview")).lower()

    close_round_as_the_worker_would(world, settings)
    with sessions.begin() as session:  # a round closed before the fix kept the note
        posted = session.get(Round, round_id)
        assert posted is not None and posted.status == RoundStatus.posted
        posted.failure_reason = note
    assert "Round failed" not in texts(run_page("Overview"))
    rounds = run_page("Training").dataframe[0].value
    assert rounds[rounds["Round"] == round_id].iloc[0]["Why it failed"] == ""


def test_token_amounts_are_formatted_exactly() -> None:
    assert fmt_exact(267_232_000_000_000_020_000) == "267.23200000000002"
    assert fmt_exact(11_404_857_600_000_000_060_000) == "11,404.85760000000006"
    assert fmt_exact(150 * WAD) == "150" and fmt_exact(10**12) == "0.000001" and fmt_exact(None) == "0"


# ------------------------------------------------------------------------------------- contributions


def test_contributions_table_filters_and_history(world: World, dashboard_env: ApiServer) -> None:
    at = run_page("Contributions")
    assert "No contribution has been scored yet" in texts(at)

    closed = close_round_as_the_worker_would(world, dashboard_env.settings)
    at = run_page("Contributions")
    table = at.dataframe[0].value
    assert len(table) == 3
    assert_readable(table)
    by_wallet = table.set_index("Wallet")
    for address, fitness in closed.fitness.items():
        assert by_wallet.loc[short(address), "Fitness"] == pytest.approx(fitness)
        # Exact, from the wei (Decimal): a float would print the last digits of a wei amount as dust.
        assert by_wallet.loc[short(address), "Reward (DALLA)"] == fmt_exact(closed.reward_wei[address])
    assert set(table["Organization"]) == {f"org {i}" for i in ORGS[:3]}
    assert metrics(at)["Kept"] == "2 / 3"
    # Evidence in words with what was measured, from the codes the API serves.
    assert {by_wallet.loc[short(a), "Evidence"] for a in closed.excluded} == {
        "points away from the server's reference update and harms the validation loss (cosine -0.412)"
    }
    assert {by_wallet.loc[short(a), "Evidence"] for a in closed.kept} == {"-"}

    at.toggle(key="contrib-kept").set_value(True).run()
    assert sorted(at.dataframe[0].value["Wallet"]) == sorted(short(a) for a in closed.kept)
    at.toggle(key="contrib-kept").set_value(False)
    at.slider(key="contrib-fitness").set_value((80.0, 100.0)).run()
    assert list(at.dataframe[0].value["Wallet"]) == [short(closed.kept[0])]

    at.selectbox(key="contrib-history-org").set_value(f"org {ORGS[1]}").run()
    shown = metrics(at)
    assert shown["Rounds contributed"] == "1"
    assert shown["Mean fitness"] == f"{closed.fitness[address_of(ORGS[1])]:.1f}"
    assert shown["Total rewards (DALLA)"] == "75.00"
    assert shown["Reputation"] == "60.0"
    # Equal scores stay visible: grouped bars side by side (lines at the same height hid each other).
    history = {f["layout"]["title"]["text"]: f for f in charts(at)}["Scores and rewards per round"]
    scores = [t for t in history["data"] if t["name"] in ("fitness", "quality", "timeliness", "honesty")]
    assert len(scores) == 4 and all(t["type"] == "bar" for t in scores)
    assert history["layout"]["barmode"] == "group" and len({t["offsetgroup"] for t in scores}) == 4


def test_the_vote_chart_quorum_label_sits_above_the_bars_on_a_background() -> None:
    """Issue 22 item 10: "Quorum (For + Abstain)" was written over the green For bar, unreadable."""
    from visualization.charts import vote_tally

    layout = vote_tally(70.0, 5.0, 10.0, 40.0).to_plotly_json()["layout"]
    (label,) = [a for a in layout["annotations"] if "quorum" in a["text"]]
    assert label["y"] >= 1 and label["yanchor"] == "bottom" and label["bgcolor"]
    assert layout["margin"]["t"] >= 25  # room for it above the plot


# ------------------------------------------------------------------------------------ token economics


def test_token_page_signed_out_shows_the_chain_figures(
    dashboard_env: ApiServer, w3: Web3, deployments: Deployments
) -> None:
    at = run_page("Token economics")
    token = deployments.contract(w3, "RewardToken")
    registry = deployments.contract(w3, "ParticipantRegistry")
    shown = metrics(at)
    assert shown["Total supply (DALLA)"] == fmt_amount(token.functions.totalSupply().call())
    assert shown["Stake locked (DALLA)"] == fmt_amount(registry.functions.totalStaked().call())
    assert shown["Treasury (DALLA)"] == fmt_amount(
        token.functions.balanceOf(deployments.addresses["Timelock"]).call()
    )
    assert "Connect your wallet and sign in" in texts(at)
    assert "Balance (DALLA)" not in shown


def test_token_page_signed_in_shows_the_organizations_account(
    world: World, dashboard_env: ApiServer, w3: Web3, deployments: Deployments
) -> None:
    closed = close_round_as_the_worker_would(world, dashboard_env.settings)
    index = ORGS[0]
    auth = http_login(dashboard_env, index)
    at = run_page("Token economics", auth=auth)
    token = deployments.contract(w3, "RewardToken")
    registry = deployments.contract(w3, "ParticipantRegistry")
    address = address_of(index)
    shown = metrics(at)
    assert shown["Balance (DALLA)"] == fmt_amount(token.functions.balanceOf(address).call())
    assert shown["Stake (DALLA)"] == fmt_amount(registry.functions.stakeOf(address).call())
    assert shown["Voting power (DALLA)"] == fmt_amount(token.functions.getVotes(address).call())
    assert shown["Reputation"] == "60.0"
    text = texts(at)
    assert f"org {index}" in text
    figures = {f["layout"]["title"]["text"]: f for f in charts(at)}
    assert figures["Rewards assigned per round (DALLA)"]["data"][0]["y"] == [
        sum(closed.reward_wei.values()) / WAD
    ]
    # Claims: the API's reward proofs (GET /v1/rewards/{address}) drive the Claim buttons.
    route = httpx.get(
        f"{dashboard_env.url}/v1/rewards/{address}",
        headers={"Authorization": f"Bearer {auth['token']}"},
        timeout=LIVE_API_TIMEOUT,
    )
    if route.status_code == 404 and "error" not in route.json():
        assert "does not serve reward proofs yet" in text
    else:
        assert "Claimable rewards" in text


# ---------------------------------------------------------------------------------------- governance


def test_governance_lists_a_proposal_with_its_state_and_tally(
    dashboard_env: ApiServer, w3: Web3, deployments: Deployments
) -> None:
    proposer, key = dashboard_account(13)
    from visualization.data import Chain

    gov = Governance(Chain(str(w3.provider.endpoint_uri), deployments))  # type: ignore[attr-defined]
    spec = spec_by_name("trim_fraction")
    description = f"Trim 10% ({w3.eth.block_number}, page test)"
    calldata = gov.set_parameter_calldata(spec, spec.to_raw("0.1"))
    target = deployments.addresses["ProtocolParameters"]
    governor = deployments.contract(w3, "FLGovernor")
    send_transaction(
        w3, governor.functions.propose([target], [0], [bytes.fromhex(calldata[2:])], description), key
    )
    pid = proposal_id([target], [0], [calldata], description)
    assert governor.functions.state(pid).call() == 0  # Pending

    at = run_page("Governance")
    text = texts(at)
    assert description in text and "Pending" in text
    assert "ProtocolParameters.setParameter(trim_fraction → 0.1)" in text
    rows = at.dataframe[0].value
    row = rows[rows["Title"] == description].iloc[0]
    assert row["State"] == "Pending"
    assert row["Voting ends (block)"] == governor.functions.proposalDeadline(pid).call()
    # The quorum reads the same in the table, the proposal's figures and its progress bar.
    quorum = fmt_amount(governor.functions.quorum(w3.eth.block_number - 1).call())
    assert row["Quorum (DALLA)"] == quorum
    assert metrics(at)["Quorum (DALLA)"] == quorum
    assert f"of {quorum} DALLA" in text
    assert "Sign in with your wallet to submit a proposal." in text

    # Voting opens after the voting delay; a vote cast on-chain shows in the tally.
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    voter, voter_key = dashboard_account(14)
    send_transaction(w3, governor.functions.castVote(pid, 0), voter_key)
    weight = governor.functions.getVotes(voter, governor.functions.proposalSnapshot(pid).call()).call()
    at = run_page("Governance", auth=http_login(dashboard_env, 14))
    rows = at.dataframe[0].value
    row = rows[rows["Title"] == description].iloc[0]
    assert row["State"] == "Active"
    assert row["Against (DALLA)"] == fmt_amount(weight)
    assert "You have voted on this proposal." in texts(at)
    # The signed-in organization may propose: the form shows the parameter's current value.
    strategy = spec_by_name("strategy")
    current = strategy.from_raw(
        deployments.contract(w3, "ProtocolParameters").functions.get(strategy.index).call()
    )
    assert at.selectbox(key="gov-param").value.name == "strategy"
    assert f"Current value: **{current}**" in texts(at)
