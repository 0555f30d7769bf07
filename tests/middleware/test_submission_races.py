"""Submissions of one organization racing each other: one row wins, nothing is left orphaned.

Every racer is verified before any of them records (the window a real race has: checks read, the write
comes after), then all record at once from threads; on PostgreSQL the unique (round, participant) index
makes the losers wait for the winner's commit.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from db.models import Update
from fedledger.domain import submissions
from fedledger.domain.errors import Conflict
from tests.middleware.conftest import ORGS, World, make_update, verified


def _blob_files(world: World) -> set[str]:
    root = world.client.app.state.fl.blobs.root
    return {p.name for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("same_bytes_twice", [False, True])
def test_racing_submissions_store_one_row_and_leave_no_orphaned_blob(
    world: World, same_bytes_twice: bool
) -> None:
    state = world.client.app.state.fl
    index = ORGS[2]
    racers = [make_update(world, index, seed=seed) for seed in range(4)]
    if same_bytes_twice:
        racers.append(racers[0])
    before = _blob_files(world)
    checked = []
    for envelope, signature in racers:
        result = verified(world, index, envelope, signature)
        checked.append((result, envelope))

    def race(item: tuple[submissions.Verified, bytes]) -> str:
        try:
            receipt = submissions.record(state.sessions, state.blobs, item[0], item[1])
        except Conflict:
            return "conflict"
        return "replayed" if receipt.replayed else "accepted"

    with ThreadPoolExecutor(len(checked)) as pool:
        outcomes = list(pool.map(race, checked))

    assert outcomes.count("accepted") == 1, outcomes
    with state.sessions() as session:
        rows = session.scalars(select(Update).where(Update.round_id == world.round["id"])).all()
        assert len(rows) == 1
        winner_hash = rows[0].ciphertext_hash
        assert session.scalar(select(func.count()).select_from(Update)) == 1
    winner_racers = sum(hashlib.sha256(e).hexdigest() == winner_hash for e, _ in racers)
    # Racers with the winner's bytes get its receipt back; every other payload is refused.
    assert outcomes.count("replayed") == winner_racers - 1
    assert outcomes.count("conflict") == len(racers) - winner_racers
    # Exactly the winner's ciphertext is on disk: the losers removed theirs.
    assert _blob_files(world) - before == {winner_hash}
