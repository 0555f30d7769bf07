"""Orphan blobs: a crash between a submission's fsync and its commit leaves a sealed update no row names.

The sweep (``fedledger.domain.blobsweep``, run by the API at start-up and by ``fedledger blobs sweep``)
removes such a file once it is older than the grace period, and keeps everything else: a referenced update,
a fresh orphan (a submission may be about to commit it), model weights, files that are not sealed updates.
A dry run removes nothing; a second run finds nothing more. On SQLite and PostgreSQL (the ``world``
fixture's API), with the real blob store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli_app
from fedledger.config import Settings, get_settings
from fedledger.domain import blobsweep, submissions
from fedledger.domain import model_versions as model_service
from fedledger.domain.blobstore import FilesystemBlobStore
from fedledger.domain.tasks import CeleryTaskQueue
from middleware.app import create_app
from tests.middleware.conftest import ORGS, World, make_update, post_update, verified

GRACE = 3600
OLD = 2 * GRACE


def age(blobs: FilesystemBlobStore, digest: str, seconds: float = OLD) -> None:
    then = time.time() - seconds
    os.utime(blobs.path(digest), (then, then))


def stale_temp_file(blobs: FilesystemBlobStore) -> Path:
    path = blobs.root / "ab" / ".tmp-crashedwrite"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an envelope")
    then = time.time() - OLD
    os.utime(path, (then, then))
    return path


class Store:
    """One blob of each kind the sweep must tell apart."""

    def __init__(self, world: World) -> None:
        state = world.client.app.state.fl
        assert isinstance(state.blobs, FilesystemBlobStore)
        self.blobs: FilesystemBlobStore = state.blobs
        envelope, signature = make_update(world, ORGS[0])
        assert post_update(world, ORGS[0], envelope, signature).status_code == 202
        self.referenced = hashlib.sha256(envelope).hexdigest()
        # Sealed updates whose rows were never committed (the API died after the fsync).
        orphan = make_update(world, ORGS[1], seed=1)[0]
        self.old_orphan, self.old_orphan_bytes = self.blobs.put(orphan), len(orphan)
        self.fresh_orphan = self.blobs.put(make_update(world, ORGS[2], seed=2)[0])
        with state.read_sessions() as session:
            self.model = model_service.require_active(session).weights_hash
        self.foreign = self.blobs.put(b"not a sealed update: never removed by the sweep")
        for digest in (self.referenced, self.old_orphan, self.model, self.foreign):
            age(self.blobs, digest)
        self.temp = stale_temp_file(self.blobs)

    def kept(self) -> list[str]:
        return [self.referenced, self.fresh_orphan, self.model, self.foreign]


def sweep(world: World, **options: object) -> blobsweep.SweepReport:
    state = world.client.app.state.fl
    return blobsweep.sweep_orphans(
        state.sessions,
        state.blobs,
        grace_seconds=GRACE,
        read_sessions=state.read_sessions,
        **options,  # type: ignore[arg-type]
    )


def test_an_old_orphan_is_removed_and_everything_else_kept(world: World) -> None:
    store = Store(world)

    dry = sweep(world, dry_run=True)
    assert dry.dry_run and dry.removed == (store.old_orphan,) and dry.temporary_removed == 1
    assert store.blobs.exists(store.old_orphan) and store.temp.exists()  # a dry run removes nothing

    report = sweep(world)
    assert report.removed == (store.old_orphan,)
    assert report.removed_bytes == store.old_orphan_bytes
    assert report.temporary_removed == 1 and not store.temp.exists()
    assert (report.referenced, report.recent, report.not_updates) == (2, 1, 1)
    assert not store.blobs.exists(store.old_orphan)
    assert all(store.blobs.exists(d) for d in store.kept())
    assert report.errors == ()

    again = sweep(world)
    assert again.removed == () and again.temporary_removed == 0
    assert all(store.blobs.exists(d) for d in store.kept())

    # Past its grace period the once-fresh orphan goes too; the referenced update and the model never do.
    assert sweep(world, now=time.time() + OLD).removed == (store.fresh_orphan,)
    assert all(store.blobs.exists(d) for d in (store.referenced, store.model, store.foreign))


def test_an_orphan_resubmitted_while_the_sweep_runs_keeps_its_file(world: World) -> None:
    """The client's retry of the same bytes (its spool) commits a row naming an old orphan while the sweep
    decides: the sweep waits for the round's lock the inserting submission holds, then sees the row."""
    state = world.client.app.state.fl
    index = ORGS[3]
    envelope, signature = make_update(world, index)
    digest = state.blobs.put(envelope)
    age(state.blobs, digest)  # the crashed attempt's file, long past the grace period
    checked = verified(world, index, envelope, signature)
    state.blobs.put(envelope)  # the retry's write: the file is there, nothing is written
    winner = state.sessions()
    winner.begin()
    submissions._insert(winner, checked)  # inserted, holding the round's lock, not committed
    reports: list[blobsweep.SweepReport] = []
    thread = threading.Thread(target=lambda: reports.append(sweep(world)))
    thread.start()
    try:
        time.sleep(1.0)  # the sweep has found the file unreferenced and waits for the round's lock
        assert state.blobs.exists(digest), "the sweep removed a ciphertext a pending row names"
    finally:
        winner.commit()
        winner.close()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert reports[0].removed == () and reports[0].referenced >= 1
    assert state.blobs.get(digest) == envelope


def test_the_api_sweeps_at_start_up_and_starts_even_if_the_sweep_fails(
    world: World, settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(world)
    queue = CeleryTaskQueue(settings.resolved_broker_url)
    with caplog.at_level(logging.INFO, logger="middleware.app"), TestClient(create_app(settings, queue)):
        pass
    assert not store.blobs.exists(store.old_orphan) and not store.temp.exists()
    assert all(store.blobs.exists(d) for d in store.kept())
    assert "blob sweep at start-up: removed 1 orphaned update blob(s)" in caplog.text

    caplog.clear()

    def broken(*args: object, **kwargs: object) -> blobsweep.SweepReport:
        raise OSError("the blob store is not mounted")

    monkeypatch.setattr(blobsweep, "sweep_orphans", broken)
    with (
        caplog.at_level(logging.INFO, logger="middleware.app"),
        TestClient(create_app(settings, queue)) as api,
    ):
        assert api.get("/healthz").status_code == 200
    assert "blob sweep at start-up failed; the API starts anyway" in caplog.text


def test_the_operator_command(world: World, settings: Settings) -> None:
    store = Store(world)
    env = {
        "FEDLEDGER_DATABASE_URL": settings.database_url,
        "FEDLEDGER_DATA_DIR": str(settings.data_dir),
        "FEDLEDGER_BLOB_DIR": None,
        "FEDLEDGER_BLOB_SWEEP_GRACE_SECONDS": str(GRACE),
    }

    def run(*args: str):  # type: ignore[no-untyped-def]
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli_app, ["blobs", "sweep", *args], env=env)
        finally:
            get_settings.cache_clear()

    dry = run("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would remove {store.old_orphan}" in dry.stdout
    assert "would remove 1 orphaned update blob(s)" in dry.stdout
    assert store.blobs.exists(store.old_orphan)

    done = run("--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["removed"] == [store.old_orphan] and report["temporary_removed"] == 1
    assert not store.blobs.exists(store.old_orphan)
    assert all(store.blobs.exists(d) for d in store.kept())

    again = run()
    assert again.exit_code == 0, again.output
    assert "removed 0 orphaned update blob(s)" in again.stdout

    # A grace period of 0 from the command line: the fresh orphan goes, nothing referenced does.
    now = run("--grace-seconds", "0")
    assert now.exit_code == 0, now.output
    assert f"removed {store.fresh_orphan}" in now.stdout
    assert all(store.blobs.exists(d) for d in (store.referenced, store.model, store.foreign))
