"""Issue 20, the server's own data: no round opens on a holdout smaller than the platform needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from db.models import RoundStatus
from fedledger.datasets import digits_split
from tests.middleware.conftest import World
from tests.middleware.test_posting_backlog import set_status


def use_holdout(world: World, source: str, needed: int | None = None) -> None:
    state = world.client.app.state.fl  # type: ignore[attr-defined]
    update: dict[str, object] = {"holdout": source}
    if needed is not None:
        update["min_holdout_examples"] = needed
    state.settings = state.settings.model_copy(update=update)


def open_round(world: World):  # type: ignore[no-untyped-def]
    return world.client.post("/v1/rounds", json={"duration_seconds": 600}, headers=world.operator)


def test_a_round_on_too_little_server_data_is_refused_naming_both_sizes(world: World, tmp_path: Path) -> None:
    set_status(world, world.round["id"], RoundStatus.failed)  # the world's round is over
    _, _, X, y = digits_split()
    small = tmp_path / "holdout.csv"
    header = ",".join([f"x{i}" for i in range(X.shape[1])] + ["label"])
    np.savetxt(small, np.column_stack([X[:150], y[:150]]), delimiter=",", header=header, comments="")
    use_holdout(world, str(small))
    refused = open_round(world)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "holdout_too_small"
    assert "has 150 labelled examples and rounds need at least 200" in refused.json()["detail"]

    missing = tmp_path / "nowhere.csv"
    use_holdout(world, str(missing))
    unreadable = open_round(world)
    assert (unreadable.status_code, unreadable.json()["error"]) == (409, "holdout_unavailable")

    # The bundled holdout (360 examples) meets the default, and a deployment may ask for more.
    use_holdout(world, "digits", needed=400)
    assert "has 360 labelled examples and rounds need at least 400" in open_round(world).json()["detail"]
    use_holdout(world, "digits", needed=200)
    opened = open_round(world)
    assert opened.status_code == 201, opened.text
