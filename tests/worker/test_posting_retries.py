"""Issue 21 item 4: a post the emission cap refuses is retried with backoff by the worker itself (it used to
fail once and wait for the beat to resend it after the close lease), and meanwhile the API refuses to open
rounds beyond the posting backlog it allows.

The deployment's emission cap is 1 wei, so every post with rewards reverts with EmissionCapExceeded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import DevChain, free_port
from fedledger.config import Settings
from tests.worker.conftest import ORGS, Platform, WorkerProcess


@pytest.fixture
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevChain, Deployments, Path]]:
    workdir = tmp_path_factory.mktemp("capped-chain")
    node = DevChain(port=free_port(), log_path=workdir / "node.log")
    node.start()
    try:
        out = workdir / "deployments.json"
        yield node, node.deploy(out, env={"FEDLEDGER_EMISSION_CAP": "1"}), out
    finally:
        node.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The beat resends a post only after the lease: an hour here, so only the task's own retries can post.
    return settings.model_copy(update={"close_lease_seconds": 3600, "max_posting_backlog": 0})


def test_a_post_refused_by_the_emission_cap_is_retried_and_no_round_opens_meanwhile(
    platform: Platform, worker: WorkerProcess
) -> None:
    round_ = platform.open_round(quorum=3, cohort=ORGS[:3])
    for index in ORGS[:3]:
        platform.submit(index, round_)
    platform.wait_for(round_["id"], {"AGGREGATED", "POSTED", "FAILED"})
    deadline = time.monotonic() + 40
    retries = 0
    while time.monotonic() < deadline and retries < 3:
        time.sleep(1)
        retries = worker.log.read_text().count("EmissionCapExceeded); retry in")
    assert retries >= 3, worker.log.read_text()[-3000:]
    assert platform.client.get(f"/v1/rounds/{round_['id']}").json()["status"] == "AGGREGATED"

    refused = platform.client.post(
        "/v1/rounds", json={"duration_seconds": 120, "quorum": 3}, headers=platform.operator
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "posting_behind"
