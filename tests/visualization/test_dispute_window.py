"""The token page's claims when rounds have a dispute window: on a Hardhat node of this module's own (a
one-hour window and a guardian, tests/chain/dispute.py), the real API over HTTP, under Streamlit's AppTest
and in the browser (``fedledger dashboard`` in headless Chromium, as in test_browser_e2e.py).

Only rewards whose window is over count as "Claimable" and get a Claim button; one still in its window says
when it becomes claimable, one cancelled in it says it never will, and neither is offered for a claim."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from web3 import Web3

from fedledger.chain.deployments import Deployments
from fedledger.chain.params import WAD
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from tests.chain import dispute
from tests.chain.dispute import (
    WINDOW,
    cancel,
    claimable_at,
    pass_the_window,
    posted_in_database,
    recorded_round,
)
from tests.middleware.conftest import World, address_of
from tests.visualization import test_browser_e2e as e2e
from tests.visualization.conftest import ApiServer
from tests.visualization.eip1193 import BINDING, INIT_SCRIPT, TestWallet
from tests.visualization.test_browser_e2e import go_to, metric_value, settle, shoot, wallet_button
from tests.visualization.test_pages import http_login, metrics, run_page, texts

pytestmark = [pytest.mark.chain, pytest.mark.redis]

# This module's own chain (one-hour window, a guardian) replaces the session's for every fixture built on it.
dev_chain, w3, deployments, deployments_file = (
    dispute.dev_chain,
    dispute.w3,
    dispute.deployments,
    dispute.deployments_file,
)

# The browser test's dashboard process and Chromium (its database is SQLite, by parametrization).
dashboard, browser = e2e.dashboard, e2e.browser

ORG, OTHER = 3, 4


def posted(settings: Settings, w3: Web3, deployments: Deployments, amounts: dict[int, int]) -> int:
    """A round recorded on-chain and posted in the database, paying dev account index -> token wei."""
    rewards = {address_of(index): amount for index, amount in amounts.items()}
    round_id, tree = recorded_round(w3, deployments, rewards, gap=1000)  # clear of the world's rounds
    posted_in_database(settings, round_id, tree, rewards)
    return round_id


def claim_buttons(at: AppTest) -> dict[str, dict[str, Any]]:
    """The wallet component's Claim buttons on the page, by label, with their arguments (disabled...)."""
    found = {}
    for element in at.main.get("component_instance"):
        args = json.loads(element.proto.json_args)
        if str(args.get("label", "")).startswith("Claim round"):
            found[args["label"]] = args
    return found


def test_only_rounds_past_their_window_are_claimable(
    world: World, dashboard_env: ApiServer, w3: Web3, deployments: Deployments
) -> None:
    settings = dashboard_env.settings
    cancelled = posted(settings, w3, deployments, {ORG: 4 * WAD, OTHER: WAD})
    cancel(w3, deployments, cancelled)
    ripe = posted(settings, w3, deployments, {ORG: 2 * WAD})
    pass_the_window(w3)
    pending = posted(settings, w3, deployments, {ORG: 5 * WAD, OTHER: WAD})
    auth = http_login(dashboard_env, ORG)

    at = run_page("Token economics", auth=auth)
    shown = metrics(at)
    assert shown["Claimable (DALLA)"] == "2.00"  # the ripe round only
    assert shown["In dispute window (DALLA)"] == "5.00"
    buttons = claim_buttons(at)
    assert set(buttons) == {f"Claim round {ripe}"}
    assert buttons[f"Claim round {ripe}"]["disabled"] is False  # its simulated claim goes through
    text = texts(at)
    opens = claimable_at(w3, deployments, pending)
    when = datetime.fromtimestamp(opens, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"Round **{pending}**: 5 DALLA · in its dispute window: claimable at {when} (in about" in text
    assert (
        f"Round **{cancelled}**: 4 DALLA · cancelled in its dispute window by governance or a guardian: "
        "nothing can be claimed" in text
    )
    assert "Nothing to claim" not in text

    # Nothing claimable yet: the page says why, and offers no claim the chain would refuse.
    at = run_page("Token economics", auth=http_login(dashboard_env, OTHER))
    shown = metrics(at)
    assert shown["Claimable (DALLA)"] == "0.00" and shown["In dispute window (DALLA)"] == "1.00"
    assert not claim_buttons(at)
    assert "Nothing to claim. 1 reward(s) still in their dispute window. 1 reward(s) cancelled." in texts(at)

    # Once the chain's time passes the window, the pending round is claimable; the cancelled one never is.
    pass_the_window(w3, WINDOW)
    at = run_page("Token economics", auth=auth)
    assert metrics(at)["Claimable (DALLA)"] == "7.00"
    assert "In dispute window (DALLA)" not in metrics(at)
    assert set(claim_buttons(at)) == {f"Claim round {ripe}", f"Claim round {pending}"}
    assert "cancelled in its dispute window" in texts(at)


def claim_buttons_in(page) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The Claim buttons on the page by label (each wallet button lives in a component iframe)."""
    frames = page.get_by_test_id("stMain").locator('iframe[data-testid="stCustomComponentV1"]')
    found = {}
    for i in range(frames.count()):
        button = frames.nth(i).content_frame.get_by_role("button")
        button.wait_for()
        label = button.inner_text().strip()
        if label.startswith("Claim round"):
            found[label] = button
    return found


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_in_the_browser_a_round_gets_its_claim_button_when_its_window_is_over(
    world: World,
    api_server: ApiServer,
    dashboard: str,
    browser,  # type: ignore[no-untyped-def]
    w3: Web3,
    deployments: Deployments,
    tmp_path: Path,
) -> None:
    settings = api_server.settings
    cancelled = posted(settings, w3, deployments, {ORG: 4 * WAD})
    cancel(w3, deployments, cancelled)
    ripe = posted(settings, w3, deployments, {ORG: 2 * WAD})
    pass_the_window(w3)
    pending = posted(settings, w3, deployments, {ORG: 5 * WAD})
    when = datetime.fromtimestamp(claimable_at(w3, deployments, pending), UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )
    wallet = TestWallet(w3, dev_private_key(ORG))
    address = wallet.address
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    context.set_default_timeout(e2e.TIMEOUT_MS)
    console: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.expose_function(BINDING, wallet.handle)
        page.add_init_script(INIT_SCRIPT)
        page.goto(dashboard)
        page.get_by_role("heading", name="Overview").first.wait_for()
        settle(page)
        wallet_button(page.get_by_test_id("stSidebar"), "Connect wallet").click()
        page.get_by_text(f"Signed in as {address}").wait_for()
        settle(page)

        # In the window: counted apart, "claimable at" its time, no button; the cancelled round says so.
        go_to(page, "Token economics")
        assert metric_value(page, "Claimable (DALLA)") == "2.00"
        assert metric_value(page, "In dispute window (DALLA)") == "5.00"
        page.get_by_text(f"in its dispute window: claimable at {when}").wait_for()
        page.get_by_text("cancelled in its dispute window by governance or a guardian").wait_for()
        assert list(claim_buttons_in(page)) == [f"Claim round {ripe}"]
        shoot(page, "token-dispute-window")

        # The window passes on the chain: back on the page, the round has its button, and the claim mints.
        pass_the_window(w3)
        go_to(page, "Overview")
        go_to(page, "Token economics")
        assert metric_value(page, "Claimable (DALLA)") == "7.00"
        buttons = claim_buttons_in(page)
        assert sorted(buttons) == sorted([f"Claim round {ripe}", f"Claim round {pending}"])
        token = deployments.contract(w3, "RewardToken")
        before = token.functions.balanceOf(address).call()
        buttons[f"Claim round {pending}"].click()
        page.get_by_text("confirmed in block").first.wait_for()
        settle(page)
        assert deployments.contract(w3, "RewardDistributor").functions.claimed(pending, address).call()
        assert token.functions.balanceOf(address).call() == before + 5 * WAD
        assert metric_value(page, "Claimable (DALLA)") == "2.00"
        assert len(wallet.sent) == 1
    except Exception:
        print("\n".join(console[-50:]))
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"failure screenshot: {tmp_path / 'failure.png'}")
        raise
    finally:
        context.close()
