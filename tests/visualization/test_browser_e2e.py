"""The dashboard in a real headless Chromium, with a test EIP-1193 wallet (a real key) in place of MetaMask.

Processes: the session's Hardhat node, the API under uvicorn (free port), the dashboard as ``fedledger
dashboard`` (``streamlit run``, free port). The flow is a person's: connect the wallet, sign in (SIWE), read
the balance, create a parameter proposal and vote on it, each transaction sent by the wallet; the vote is
then checked on-chain. Screenshots of every page go to var/screenshots/ (the README's come from `make run`
through scripts/screenshots.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import free_port
from fedledger.chain.governance import ProposalState
from fedledger.chain.params import WAD
from tests.middleware.conftest import World, ensure_enrolled, login
from tests.visualization.conftest import (
    ApiServer,
    close_round_as_the_worker_would,
    dashboard_account,
    mine,
    open_next_round,
    posted_reward_round,
)
from tests.visualization.eip1193 import BINDING, INIT_SCRIPT, TestWallet
from visualization.data import fmt_amount
from visualization.governance import proposal_id, spec_by_name

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Ordinary runs write them under var/ so a test run never changes tracked files (the README's screenshots
# come from `make run` through scripts/screenshots.py).
SCREENSHOTS = ROOT / os.environ.get("FEDLEDGER_SCREENSHOTS", "var/screenshots")
WALLET_INDEX = 12
TIMEOUT_MS = 60_000


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only here: the page tests already cover PostgreSQL, and the browser run is the slow one."""
    yield f"sqlite:///{tmp_path / 'api.db'}"


@pytest.fixture
def dashboard(world: World, api_server: ApiServer, dev_chain, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """``fedledger dashboard`` on a free port, reading the test API and chain."""
    port = free_port()
    # The dashboard asks for sign-in messages naming its own origin; the API accepts it as configured.
    api_server.settings.siwe_allowed_domains = [f"127.0.0.1:{port}"]
    env = dict(
        os.environ,
        FEDLEDGER_API_URL=api_server.url,
        FEDLEDGER_CHAIN_RPC_URL=dev_chain[0].rpc_url,
        FEDLEDGER_DASHBOARD_HOST="127.0.0.1",
        FEDLEDGER_DASHBOARD_PORT=str(port),
    )
    log_path = tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dashboard"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the dashboard exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


@pytest.fixture
def browser() -> Iterator:  # type: ignore[type-arg]
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run scripts/install_browser.sh")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (the browser is Debian's)"
    )
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            instance.close()


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=TIMEOUT_MS)


def go_to(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name).first.wait_for(timeout=TIMEOUT_MS)
    settle(page)


def wallet_button(scope, label: str):  # type: ignore[no-untyped-def]
    """The wallet component's button (inside its iframe) under ``scope``."""
    return scope.frame_locator('iframe[data-testid="stCustomComponentV1"]').get_by_role("button", name=label)


def wallet_button_among(scope, label: str):  # type: ignore[no-untyped-def]
    """The wallet button named ``label`` among several wallet components under ``scope``."""
    selector = 'iframe[data-testid="stCustomComponentV1"]'
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        for i in range(scope.locator(selector).count()):
            button = scope.frame_locator(selector).nth(i).get_by_role("button", name=label)
            if button.count():
                return button
        assert time.monotonic() < deadline, f"no wallet button {label!r}"
        time.sleep(0.3)


def shoot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    settle(page)
    page.wait_for_timeout(500)  # charts finish their layout
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def metric_value(page, label: str) -> str:  # type: ignore[no-untyped-def]
    metric = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    )
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def test_connect_sign_in_read_balance_propose_and_vote(
    world: World,
    api_server: ApiServer,
    dashboard: str,
    browser,
    w3: Web3,
    deployments: Deployments,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # Live data to show: a closed round, a new one open; the wallet's organization registered and enrolled.
    close_round_as_the_worker_would(world, api_server.settings)
    open_next_round(world)
    address, key = dashboard_account(WALLET_INDEX)
    # Registration needs stake on-chain (403 not_enrolled otherwise): enroll both organizations first, so
    # the test does not rely on an earlier test of the session having enrolled these dev accounts.
    ensure_enrolled(w3, deployments, WALLET_INDEX)
    ensure_enrolled(w3, deployments, WALLET_INDEX + 1)
    headers = login(world.client, WALLET_INDEX)
    assert (
        world.client.post(
            "/v1/participants", json={"org_name": "Dashboard Clinic"}, headers=headers
        ).status_code
        == 200
    )
    headers = login(world.client, WALLET_INDEX + 1)
    assert (
        world.client.post("/v1/participants", json={"org_name": "Other Lab"}, headers=headers).status_code
        == 200
    )
    reward = 42 * WAD
    reward_round = posted_reward_round(
        world, api_server.settings, w3, {WALLET_INDEX: reward, WALLET_INDEX + 1: 8 * WAD}
    )

    wallet = TestWallet(w3, key)
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    console: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.expose_function(BINDING, wallet.handle)
        page.add_init_script(INIT_SCRIPT)
        page.goto(dashboard)
        page.get_by_role("heading", name="Overview").first.wait_for()
        settle(page)
        assert metric_value(page, "Model version") == "v2"
        # The Organizations table fits a 1440 px window: no column is cut off behind a scrollbar.
        grid = page.get_by_test_id("stDataFrame").first
        grid.wait_for()
        widths = grid.evaluate(
            "(e) => { const s = e.querySelector('.dvn-scroller') || e; return [s.scrollWidth, s.clientWidth]; }"
        )
        assert widths[0] <= widths[1] + 1, f"Organizations table cut: {widths}"
        shoot(page, "overview")

        # Connect: the component (an iframe) reaches the top document's provider; the SIWE signature follows.
        wallet_button(page.get_by_test_id("stSidebar"), "Connect wallet").click()
        page.get_by_text(f"Signed in as {address}").wait_for()
        settle(page)
        methods = [c["method"] for c in wallet.calls]
        assert methods[:3] == ["eth_requestAccounts", "eth_chainId", "personal_sign"], methods
        signed = bytes.fromhex(wallet.calls[2]["params"][0][2:]).decode()
        # EIP-4361: the domain is the page that asks the wallet (the dashboard), not the API's host.
        host = dashboard.removeprefix("http://")
        assert signed.startswith(f"{host} wants you to sign in with your Ethereum account:"), signed
        assert address in signed and "URI: http://testserver" in signed
        # Waits (visible): Streamlit may still be drawing the sidebar after the run that settled.
        page.get_by_test_id("stSidebar").get_by_text("Dashboard Clinic").wait_for(timeout=TIMEOUT_MS)

        # The balance the chain reports for this wallet.
        go_to(page, "Token economics")
        token = deployments.contract(w3, "RewardToken")
        assert metric_value(page, "Balance (DALLA)") == fmt_amount(token.functions.balanceOf(address).call())
        registry = deployments.contract(w3, "ParticipantRegistry")
        assert metric_value(page, "Stake (DALLA)") == fmt_amount(registry.functions.stakeOf(address).call())
        assert metric_value(page, "Claimable (DALLA)") == "42.00"
        shoot(page, "token")

        # Claim: the wallet sends RewardDistributor.claim with the API's Merkle proof; the tokens are minted.
        before = token.functions.balanceOf(address).call()
        wallet_button(page.get_by_test_id("stMain"), f"Claim round {reward_round}").click()
        page.get_by_text("confirmed in block").first.wait_for()
        settle(page)
        distributor = deployments.contract(w3, "RewardDistributor")
        assert distributor.functions.claimed(reward_round, address).call()
        assert token.functions.balanceOf(address).call() == before + reward
        assert metric_value(page, "Balance (DALLA)") == fmt_amount(before + reward)
        page.get_by_text("Nothing to claim. 1 reward(s) already claimed.").wait_for()

        go_to(page, "Training")
        shoot(page, "training")
        go_to(page, "Contributions")
        shoot(page, "contributions")

        # Propose: strategy → median, with a description of our own; the wallet sends FLGovernor.propose.
        go_to(page, "Governance")
        description = f"Use the coordinate-wise median ({uuid.uuid4().hex[:8]})"
        page.get_by_test_id("stSelectbox").filter(has_text="New value").click()
        page.get_by_role("option", name="median", exact=True).click()
        settle(page)
        area = page.get_by_label("Description")
        area.fill(description)
        area.press("Control+Enter")
        settle(page)
        spec = spec_by_name("strategy")
        parameters = deployments.contract(w3, "ProtocolParameters")
        calldata = parameters.encode_abi("setParameter", args=[spec.index, spec.to_raw("median")])
        pid = proposal_id([parameters.address], [0], [calldata], description)
        page.get_by_text(f"proposal id `{pid}`").or_(page.get_by_text(str(pid))).first.wait_for()
        wallet_button(page.get_by_test_id("stMain"), "Submit proposal").click()
        page.get_by_text("confirmed in block").first.wait_for()
        settle(page)
        governor = deployments.contract(w3, "FLGovernor")
        assert governor.functions.state(pid).call() == ProposalState.Pending
        # The same proposal again would revert: the page says what that means instead of the raw error.
        page.get_by_text(
            "A proposal with exactly these actions and this description already exists"
        ).wait_for()
        assert governor.functions.proposalProposer(pid).call() == address

        # The voting delay (1 block) passes; back on the page the proposal is active and the wallet votes For.
        mine(w3, 2)
        go_to(page, "Overview")
        go_to(page, "Governance")
        proposal = page.get_by_test_id("stExpander").filter(has_text=description)
        proposal.get_by_text("Active").first.wait_for()
        wallet_button(proposal, "Vote For").click()
        page.get_by_text("confirmed in block").first.wait_for()
        settle(page)

        # On-chain: the vote counted, with the wallet's voting power at the snapshot.
        assert governor.functions.hasVoted(pid, address).call()
        against, for_votes, abstain = governor.functions.proposalVotes(pid).call()
        weight = governor.functions.getVotes(address, governor.functions.proposalSnapshot(pid).call()).call()
        assert weight > 0 and for_votes == weight and against == 0 and abstain == 0
        page.get_by_test_id("stExpander").filter(has_text=description).get_by_text(
            "You have voted on this proposal."
        ).wait_for()
        shoot(page, "governance")
        sent = {h.removeprefix("0x") for h in wallet.sent}
        assert len(sent) == 3  # claim, propose, vote
    except Exception:
        print("\n".join(console[-50:]))
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"failure screenshot: {tmp_path / 'failure.png'}")
        raise
    finally:
        context.close()


def test_reload_keeps_the_session_proposals_follow_the_chain_and_every_transaction_confirms(
    world: World,
    api_server: ApiServer,
    dashboard: str,
    browser,
    w3: Web3,
    deployments: Deployments,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Issue 22 items 4, 5 and 10: reloading signed the person out (while the README said to reload to follow
    a proposal); Queue and Execute gave no "confirmed in block" and no "Your transactions" entry; a reward
    took one transaction per round (claimMany was not offered); the Contributions table was cut at 1440 px."""
    from fedledger.chain.tx import send_transaction
    from fedledger.devkeys import dev_private_key

    index = WALLET_INDEX + 1
    address, key = dashboard_account(index)
    close_round_as_the_worker_would(world, api_server.settings)  # contributions to show
    ensure_enrolled(w3, deployments, index)
    registered = world.client.post(
        "/v1/participants", json={"org_name": "Reload Clinic"}, headers=login(world.client, index)
    )
    assert registered.status_code == 200, registered.text
    rewards = [
        posted_reward_round(world, api_server.settings, w3, {index: amount}) for amount in (3 * WAD, 4 * WAD)
    ]

    governor = deployments.contract(w3, "FLGovernor")
    parameters = deployments.contract(w3, "ProtocolParameters")
    spec = spec_by_name("trim_fraction")  # set to the value it has: the session's other tests see no change
    current = parameters.functions.get(spec.index).call()
    calldata = parameters.encode_abi("setParameter", args=[spec.index, current])
    description = f"Keep the trim fraction ({uuid.uuid4().hex[:8]})"
    send_transaction(
        w3,
        governor.functions.propose([parameters.address], [0], [bytes.fromhex(calldata[2:])], description),
        key,
    )
    pid = proposal_id([parameters.address], [0], [calldata], description)

    wallet = TestWallet(w3, key)
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    console: list[str] = []
    page = context.new_page()
    try:
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.expose_function(BINDING, wallet.handle)
        page.add_init_script(INIT_SCRIPT)
        page.goto(dashboard)
        page.get_by_role("heading", name="Overview").first.wait_for()
        settle(page)
        sidebar = page.get_by_test_id("stSidebar")
        wallet_button(sidebar, "Connect wallet").click()
        page.get_by_text(f"Signed in as {address}").wait_for()
        settle(page)
        signatures = sum(1 for c in wallet.calls if c["method"] == "personal_sign")

        # A reload keeps the session (until the token expires): no new connection, no new signature.
        page.reload()
        page.get_by_role("heading", name="Overview").first.wait_for()
        settle(page)
        sidebar.get_by_text(address).wait_for()
        sidebar.get_by_role("button", name="Sign out").wait_for(timeout=TIMEOUT_MS)
        assert sum(1 for c in wallet.calls if c["method"] == "personal_sign") == signatures

        # Claim all: one claimMany for both rounds, confirmed and listed under "Your transactions".
        go_to(page, "Token economics")
        token = deployments.contract(w3, "RewardToken")
        before = token.functions.balanceOf(address).call()
        wallet_button_among(page.get_by_test_id("stMain"), "Claim all (2 rounds, 7 DALLA)").click()
        page.get_by_text("Claim 2 rounds: confirmed in block").first.wait_for()
        settle(page)
        distributor = deployments.contract(w3, "RewardDistributor")
        assert all(distributor.functions.claimed(r, address).call() for r in rewards)
        assert token.functions.balanceOf(address).call() == before + 7 * WAD
        sidebar.get_by_text("Claim 2 rounds: confirmed").wait_for()

        # Every column of the Contributions table is inside a 1440 px window.
        go_to(page, "Contributions")
        grid = page.get_by_test_id("stDataFrame").first
        grid.wait_for()
        widths = grid.evaluate(
            "(e) => { const s = e.querySelector('.dvn-scroller') || e; return [s.scrollWidth, s.clientWidth]; }"
        )
        assert widths[0] <= widths[1] + 1, f"Contributions table cut: {widths}"

        # The proposal follows the chain on the open page: Pending, then Active, without a reload.
        go_to(page, "Governance")
        proposal = page.get_by_test_id("stExpander").filter(has_text=description)
        proposal.first.wait_for()
        mine(w3, 2)
        page.get_by_test_id("stExpander").filter(has_text=f"{description} — Active").first.wait_for()
        # Enough For votes for the quorum, cast on-chain by the dev organizations, then the period ends.
        snapshot = governor.functions.proposalSnapshot(pid).call()
        quorum = governor.functions.quorum(snapshot).call()
        cast = 0
        for voter in range(3, 20):
            voter_key = dev_private_key(voter)
            weight = governor.functions.getVotes(Account.from_key(voter_key).address, snapshot).call()
            if weight and cast < quorum:
                send_transaction(w3, governor.functions.castVote(pid, 1), voter_key)
                cast += weight
        assert cast >= quorum
        mine(w3, int(governor.functions.votingPeriod().call()) + 1)
        assert governor.functions.state(pid).call() == ProposalState.Succeeded
        succeeded = page.get_by_test_id("stExpander").filter(has_text=f"{description} — Succeeded")
        succeeded.first.wait_for()

        # Queue, then Execute once the timelock allows it: each confirmed on the page and in the sidebar.
        wallet_button_among(succeeded.first, "Queue").click()
        page.get_by_text(f"Queue “{description}”: confirmed in block").first.wait_for()
        assert governor.functions.state(pid).call() == ProposalState.Queued
        sidebar.get_by_text(f"Queue “{description}”: confirmed").wait_for()
        # The timelock's delay passes on the chain's clock (quickly mined blocks run it ahead of this
        # machine's); the page offers Execute by itself (it re-reads the proposals).
        page.get_by_test_id("stExpander").filter(has_text=f"{description} — Queued").first.wait_for()
        eta = governor.functions.proposalEta(pid).call()
        w3.provider.make_request(
            "evm_setNextBlockTimestamp", [max(eta, w3.eth.get_block("latest")["timestamp"] + 1)]
        )  # type: ignore[arg-type]
        mine(w3, 1)
        wallet_button_among(
            page.get_by_test_id("stExpander").filter(has_text=description).first, "Execute"
        ).click()
        page.get_by_text(f"Execute “{description}”: confirmed in block").first.wait_for()
        assert governor.functions.state(pid).call() == ProposalState.Executed
        sidebar.get_by_text(f"Execute “{description}”: confirmed").wait_for()
    except Exception:
        print("\n".join(console[-50:]))
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"failure screenshot: {tmp_path / 'failure.png'}")
        raise
    finally:
        context.close()
