"""Governance reaches the next round; the platform rides out a Redis restart."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from fedledger.chain import governance
from fedledger.devkeys import dev_private_key
from tests.services import redis_url
from tests.worker.conftest import ORGS, Platform

pytestmark = [pytest.mark.celery, pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


def mine(platform: Platform, blocks: int) -> None:
    for _ in range(blocks):
        platform.w3.provider.make_request("evm_mine", [])


def test_a_passed_proposal_changes_the_strategy_of_the_next_round(platform: Platform, worker) -> None:  # type: ignore[no-untyped-def]
    first = platform.open_round(quorum=3, cohort=ORGS[:3])
    assert first["strategy"] == "fltrust_guarded"
    for index in ORGS[:3]:
        platform.submit(index, first)
    assert platform.wait_for(first["id"], {"POSTED", "FAILED"})["status"] == "POSTED"

    w3, deployments = platform.w3, platform.deployments
    proposal = governance.parameter_change(
        w3, deployments, "strategy", 2, "Aggregate with the coordinate-wise median"
    )
    proposer = dev_private_key(ORGS[0])
    pid = governance.propose(w3, deployments, proposer, proposal)
    mine(platform, 2)  # voting delay: 1 block
    for index in ORGS[:5]:  # 5 x 10k votes >= the 4 % quorum of 1M
        governance.vote(w3, deployments, dev_private_key(index), pid, governance.VoteType.For)
    mine(platform, 21)  # voting period: 20 blocks
    assert governance.state(w3, deployments, pid) == governance.ProposalState.Succeeded
    governance.queue(w3, deployments, proposer, proposal)
    w3.provider.make_request("evm_increaseTime", [11])  # timelock delay: 10 s
    mine(platform, 1)
    governance.execute(w3, deployments, proposer, proposal)
    assert governance.state(w3, deployments, pid) == governance.ProposalState.Executed

    second = platform.open_round(quorum=3, cohort=ORGS[:3])
    assert second["strategy"] == "median"
    for index in ORGS[:3]:
        platform.submit(index, second, seed=1)
    assert platform.wait_for(second["id"], {"POSTED", "FAILED"})["status"] == "POSTED"
    rounds = {r["id"]: r for r in platform.client.get("/v1/stats/rounds").json()}
    assert (
        rounds[second["id"]]["strategy"] == "median" and rounds[first["id"]]["strategy"] == "fltrust_guarded"
    )


def test_a_round_completes_across_a_redis_restart(
    platform: Platform, worker, tmp_path, redis_port: int
) -> None:  # type: ignore[no-untyped-def]
    round_ = platform.open_round(quorum=5, cohort=ORGS[:5])
    for index in ORGS[:2]:
        platform.submit(index, round_)
    client = redis.Redis.from_url(redis_url(0, redis_port))
    client.shutdown(nosave=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--logfile",
            str(tmp_path / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            time.sleep(0.2)
    # Redis kept nothing: the queued notifications are gone. The round still closes: the remaining
    # submissions notify again, and the beat finds rounds from the database, not from the broker.
    for index in ORGS[2:5]:
        platform.submit(index, round_)
    assert platform.wait_for(round_["id"], {"POSTED", "FAILED"}, timeout=120)["status"] == "POSTED"
