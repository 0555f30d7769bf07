"""Issue 21 item 4: while posting is behind (a post waiting out the emission cap, a node down), the API stops
opening rounds; the in-progress check alone let AGGREGATED rounds pile up without bound."""

from __future__ import annotations

from db.models import Round, RoundStatus
from tests.middleware.conftest import World


def set_status(world: World, round_id: int, status: RoundStatus) -> None:
    with world.client.app.state.fl.sessions.begin() as session:  # type: ignore[attr-defined]
        round_ = session.get(Round, round_id)
        assert round_ is not None
        round_.status = status


def limit_backlog(world: World, rounds: int) -> None:
    state = world.client.app.state.fl  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"max_posting_backlog": rounds})


def open_round(world: World):  # type: ignore[no-untyped-def]
    return world.client.post(
        "/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=world.operator
    )


def test_no_round_opens_while_more_rounds_than_allowed_wait_for_their_post(world: World) -> None:
    limit_backlog(world, 0)
    # The world's round was aggregated, and its post reverts (EmissionCapExceeded) until the period turns.
    set_status(world, world.round["id"], RoundStatus.aggregated)
    refused = open_round(world)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "posting_behind"
    assert "1 aggregated rounds are not yet recorded on-chain" in refused.json()["detail"]
    overview = world.client.get("/v1/stats/overview").json()
    assert (overview["posting_backlog"], overview["max_posting_backlog"]) == (1, 0)

    # One waiting round is within a limit of one; posting catches up and the backlog is gone.
    limit_backlog(world, 1)
    second = open_round(world)
    assert second.status_code == 201, second.text
    set_status(world, second.json()["id"], RoundStatus.aggregated)
    assert open_round(world).json()["error"] == "posting_behind"
    set_status(world, world.round["id"], RoundStatus.posted)
    set_status(world, second.json()["id"], RoundStatus.posted)
    assert open_round(world).status_code == 201
    assert world.client.get("/v1/stats/overview").json()["posting_backlog"] == 0
