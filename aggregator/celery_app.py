"""The Celery application of the aggregator workers (``fedledger worker``).

Tasks are ``acks_late`` with ``reject_on_worker_lost``: a worker killed mid-task leaves the message to be
redelivered, and every task is idempotent (round leases, exactly-once chain writes), so redelivery is
safe. The beat sends ``tick`` every ``FEDLEDGER_TICK_SECONDS``: deadlines, stuck closes and unposted
rounds are all found from the database, so no state lives only in the broker.
"""

from __future__ import annotations

from celery import Celery

from fedledger.config import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("fedledger", broker=settings.resolved_broker_url, include=["aggregator.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule={"tick": {"task": "fedledger.rounds.tick", "schedule": settings.tick_seconds}},
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        timezone="UTC",
    )
    if app.conf.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacknowledged task after this long; it must outlast the longest close.
        app.conf.broker_transport_options = {"visibility_timeout": max(60, settings.close_lease_seconds * 2)}
    return app


app = make_celery()
