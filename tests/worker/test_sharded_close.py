"""Rounds closed in shards across two real Celery workers (Redis broker and results, PostgreSQL, Hardhat, the
API in-process, blobs in an S3-compatible store both workers share), compared with the single-worker close
of the same round recomputed from the same database and blobs.

The same means aggregator.round.sharding.TOLERANCE: weights within rtol 1e-4 + atol 1e-6, scores within
0.1 point, the same decisions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from pydantic import SecretStr
from sqlalchemy import select

from aggregator.round.compute import CloseStatus
from aggregator.round.sharding import COORDINATE_STRATEGIES, TOLERANCE
from aggregator.scoring.budget import settings_budget
from aggregator.worker import close as round_close
from db.models import Aggregation, Contribution, Participant
from db.session import session_factory
from fedledger.chain import governance
from fedledger.chain.params import STRATEGY_NAMES
from fedledger.config import Settings
from fedledger.datasets import load_holdout
from fedledger.devkeys import dev_private_key
from fedledger.domain.blob_backends import open_blob_store
from fedledger.models import family_of, init_mlp
from tests.worker.conftest import ORGS, Platform, WorkerProcess, address_of
from tests.worker.test_governance_and_faults import mine

pytestmark = [pytest.mark.celery, pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def score_budget() -> tuple[int, float] | None:
    """The closes' score budget (examples, work floor); None: the settings' defaults (every example here)."""
    return None


@pytest.fixture
def settings(
    settings: Settings,
    s3_endpoint: str,
    score_budget: tuple[int, float] | None,
) -> Settings:
    """The worker tests' settings, every close split in two coordinate ranges, blobs in the object store."""
    update: dict[str, object] = {
        "close_shards": 2,
        "update_chunk_coords": 100,  # as Platform.submit seals: the shards split at a chunk edge
        "blob_backend": "s3",
        "s3_endpoint_url": s3_endpoint,
        "s3_bucket": "fedledger-sharded",
        "s3_access_key_id": "test",
        "s3_secret_access_key": SecretStr("test"),
    }
    if score_budget is not None:
        update |= {"score_examples": score_budget[0], "score_work_floor": score_budget[1]}
    return settings.model_copy(update=update)


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Two worker processes on the same broker, one slot each: the beat's, and one more."""
    processes = [
        WorkerProcess(settings, tmp_path / "worker-1.log"),
        WorkerProcess(settings, tmp_path / "worker-2.log", "--no-beat"),
    ]
    for process in processes:
        process.start()
    yield processes
    for process in processes:
        process.stop()


def govern_strategy(platform: Platform, name: str) -> None:
    """Pass and execute the proposal that makes ``name`` the next rounds' strategy (as in
    tests/worker/test_governance_and_faults.py)."""
    w3, deployments = platform.w3, platform.deployments
    proposal = governance.parameter_change(
        w3, deployments, "strategy", STRATEGY_NAMES.index(name), f"Aggregate with {name}"
    )
    proposer = dev_private_key(ORGS[0])
    pid = governance.propose(w3, deployments, proposer, proposal)
    mine(platform, 2)
    for index in ORGS[:5]:
        governance.vote(w3, deployments, dev_private_key(index), pid, governance.VoteType.For)
    mine(platform, 21)
    governance.queue(w3, deployments, proposer, proposal)
    w3.provider.make_request("evm_increaseTime", [11])
    mine(platform, 1)
    governance.execute(w3, deployments, proposer, proposal)


def close_a_round_in_shards(
    platform: Platform, settings: Settings, tmp_path: Path, attacker: int, seed: int
) -> dict[str, object]:
    """Four honest updates and one scaled attacker, chunked and whole envelopes in one round, closed in two
    shards by the other worker's slots; then the same round's single-worker close from the same database
    rows and blobs, and the two compared. Returns the sharded close's aggregation parameters."""
    honest = ORGS[:4]
    round_ = platform.open_round(quorum=5, cohort=[*honest, attacker])
    sessions = session_factory(settings.resolved_database_url)
    # The reputations the close reads (its standing weights use them); posting the round moves them.
    with sessions() as session:
        standing = {p.id: p.reputation for p in session.scalars(select(Participant))}
    for k, index in enumerate(honest):
        platform.submit(index, round_, chunked=k % 2 == 0, seed=seed)
    platform.submit(attacker, round_, attack="scaling", chunked=True, seed=seed)
    closed = platform.wait_for(round_["id"], {"AGGREGATED", "POSTED", "FAILED"})
    assert closed["status"] in {"AGGREGATED", "POSTED"}, closed

    with sessions() as session:
        aggregation = session.scalars(select(Aggregation).where(Aggregation.round_id == round_["id"])).one()
        contributions = {
            c.update_id: c
            for c in session.scalars(select(Contribution).where(Contribution.round_id == round_["id"]))
        }
    assert aggregation.strategy == round_["strategy"]
    assert aggregation.params["shards"] == 2, "the close did not run in shards: see the workers' logs"
    assert aggregation.durations_ms["shard_statistics_ms"] > 0
    coordinate_wise = round_["strategy"] in COORDINATE_STRATEGIES
    assert (aggregation.durations_ms["shard_derive_ms"] > 0) == coordinate_wise
    logs = "".join((tmp_path / f"worker-{i}.log").read_text() for i in (1, 2))
    # The close task only sent the first pass; each pass's chord callback sent the next and the last committed.
    assert f"close round {round_['id']}: sharding" in logs
    assert f"close round {round_['id']}: computed in 2 shards" in logs
    for task in ("shard_statistics", "shard_combine", "shard_step"):
        assert f"Task fedledger.rounds.{task}" in logs, task
    assert ("Task fedledger.rounds.shard_derive" in logs) == coordinate_wise

    # The single-worker close of the same round, from the same rows and blobs.
    blobs = open_blob_store(settings)
    # Judged by the settings' score budget, as the workers judge it.
    inputs = round_close.load(
        sessions, blobs, settings.resolved_key_dir, round_["id"], settings_budget(settings)
    )
    # The reputations the close read, as its contributions record them (an audit's source), not the
    # participants' current ones: posting the round has moved those.
    read = {c.participant_id: c.reputation_before for c in contributions.values()}
    assert read == {pid: standing[pid] for pid in read}
    for participant in inputs.participants.values():  # detached rows: the database keeps the new values
        participant.reputation = read[participant.id]
    single = round_close.compute(
        inputs,
        blobs,
        load_holdout(settings.holdout),
        round_close.round_rng(round_["id"]),
        inputs.round.deadline,
    )
    assert single.status == CloseStatus.aggregated and single.new_weights is not None
    assert single.activate, "the comparison reads the active model"
    sharded_weights = platform.global_weights()
    for name, array in single.new_weights.items():
        np.testing.assert_allclose(
            sharded_weights[name], array, rtol=TOLERANCE["weights_rtol"], atol=TOLERANCE["weights_atol"]
        )
    for outcome in single.clients:
        stored = contributions[outcome.update_id]
        assert (stored.kept, stored.byzantine) == (outcome.kept, outcome.byzantine), outcome.address
        for score in ("quality", "timeliness", "honesty", "fitness"):
            assert abs(getattr(stored, score) - getattr(outcome, score)) <= TOLERANCE["score_points"]
    flagged = {c.address for c in single.clients if c.byzantine}
    assert flagged == {address_of(attacker)}
    assert single.record is not None
    for examples in ("validation_examples", "score_examples"):
        assert aggregation.params[examples] == single.record.params[examples], examples
    return dict(aggregation.params)


def test_rounds_closed_in_shards_equal_their_single_worker_close(
    platform: Platform, workers: list[WorkerProcess], settings: Settings, tmp_path: Path
) -> None:
    """The genesis rule (linear: two passes) on two workers, then a coordinate-wise one passed by governance
    (three passes) on one worker with one slot: no slot waits for the shards (each pass is a chord), so the
    close, every shard and every callback take turns in it."""
    close_a_round_in_shards(platform, settings, tmp_path, attacker=ORGS[4], seed=0)
    workers[1].stop()
    govern_strategy(platform, "trimmed_mean")
    # The first attacker is slashed by now and may not submit: another wallet attacks.
    close_a_round_in_shards(platform, settings, tmp_path, attacker=ORGS[5], seed=1)


@pytest.mark.parametrize("score_budget", [(8, 0.0)], ids=["above-the-score-budget"])
@pytest.mark.parametrize("genesis", [init_mlp(64, 16, 10, np.random.default_rng(7))], ids=["mlp"])
def test_an_mlp_round_closed_in_shards_equals_its_single_worker_close(
    platform: Platform,
    workers: list[WorkerProcess],
    settings: Settings,
    tmp_path: Path,
    genesis: dict[str, np.ndarray],
) -> None:
    """The MLP (64 features, 16 hidden units, 10 classes: 1,210 coordinates in name order, the first layer's
    1,040 then the output layer's 170) in two shards cut at 600, inside hidden.weight: the first shard
    sends partial hidden responses only, the second the rest of them and every row's output layer. Above
    the score budget (8 examples, no floor): the shards respond on the scores' 8 examples, the combine pass
    on every one for the aggregate and the reference only."""
    assert family_of(genesis) == family_of(platform.global_weights()) == "mlp"
    params = close_a_round_in_shards(platform, settings, tmp_path, attacker=ORGS[4], seed=0)
    assert params["score_examples"] == 8 < int(str(params["validation_examples"]))
