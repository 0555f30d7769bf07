"""The overview page shows the posting backlog (issue 21 item 4): rounds aggregated but not yet recorded
on-chain, whose rewards, slashes and activity refreshes wait."""

from __future__ import annotations

import pytest

from db.models import Round, RoundStatus
from tests.middleware.conftest import World
from tests.visualization.conftest import ApiServer
from tests.visualization.test_pages import metrics, run_page, texts

pytestmark = pytest.mark.chain


def test_overview_shows_the_posting_backlog(world: World, dashboard_env: ApiServer) -> None:
    assert metrics(run_page("Overview"))["Posting backlog"] == "0"
    with world.client.app.state.fl.sessions.begin() as session:  # type: ignore[attr-defined]
        round_ = session.get(Round, world.round["id"])
        assert round_ is not None
        round_.status = RoundStatus.aggregated
    at = run_page("Overview")
    assert metrics(at)["Posting backlog"] == "1"
    assert "1 aggregated round(s) wait for their on-chain record" in texts(at)
