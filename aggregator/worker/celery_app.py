"""The Celery application of the aggregator workers (``fedledger worker``).

Tasks are ``acks_late`` with ``reject_on_worker_lost``: a worker killed mid-task leaves the message to be
redelivered, and every task is idempotent (round leases, exactly-once chain writes), so redelivery is
safe. The beat sends ``tick`` every ``FEDLEDGER_TICK_SECONDS`` (and the chain upkeep of
aggregator.worker.upkeep on its own timers): deadlines, stuck closes and unposted
rounds are all found from the database, so no state lives only in the broker; each close and post is
sent once per round (fedledger.domain.pipeline), so the broker carries two tasks per round plus the ticks.
"""

from __future__ import annotations

from pathlib import Path

import kombu.transport
from celery import Celery
from kombu.transport.sqlalchemy import Transport as SQLTransport

from fedledger.config import get_settings
from fedledger.domain.tasks import ANCHOR_AUDIT_TASK, EXECUTE_SLASHES_TASK, SWEEP_TEMPORARIES_TASK, TICK_TASK


class FastPollingSQLTransport(SQLTransport):
    """kombu's SQLAlchemy transport, polling every 50 ms instead of every second."""

    polling_interval = 0.05


def _result_backend(broker_url: str, data_dir: Path) -> str:
    """Where shard results go: the broker's Redis, or a SQLite file beside the embedded broker's."""
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    return f"db+sqlite:///{data_dir / 'results.db'}"


def make_celery() -> Celery:
    """The worker's Celery app from the settings (broker, queues, beat schedule)."""
    settings = get_settings()
    app = Celery("fedledger", broker=settings.resolved_broker_url, include=["aggregator.worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "tick": {"task": TICK_TASK, "schedule": settings.tick_seconds},
            "execute-slashes": {"task": EXECUTE_SLASHES_TASK, "schedule": settings.slash_execute_seconds},
            "anchor-audit": {"task": ANCHOR_AUDIT_TASK, "schedule": settings.audit_anchor_seconds},
            "sweep-temporaries": {"task": SWEEP_TEMPORARIES_TASK, "schedule": settings.shard_sweep_seconds},
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        # Only the shard tasks of a sharded close keep results (they opt in): each pass's chord gathers them.
        result_backend=_result_backend(settings.resolved_broker_url, settings.data_dir),
        result_expires=3600,
        timezone="UTC",
    )
    if app.conf.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacknowledged task after this long; it must outlast the longest close.
        app.conf.broker_transport_options = {"visibility_timeout": max(60, settings.close_lease_seconds * 2)}
    elif app.conf.broker_url.startswith("sqla+"):
        # kombu's database transport polls; its default of 1 s put ~1 s in front of every task (the close,
        # then the post) of an embedded round. A poll is one indexed SELECT on the broker's SQLite file.
        # The interval cannot go in broker_transport_options: this transport hands those to create_engine.
        kombu.transport.TRANSPORT_ALIASES["sqla"] = f"{__name__}:FastPollingSQLTransport"
    return app


app = make_celery()
