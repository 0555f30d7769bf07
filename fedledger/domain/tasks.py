"""The one call the API makes into the aggregator: "an update arrived for round N".

Behind a small interface so the API never imports worker code; the Celery implementation sends the task
by name to the broker the settings name.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

UPDATE_RECEIVED_TASK = "fedledger.rounds.update_received"


class TaskQueue(Protocol):
    """How the API tells the worker that something happened (Celery in production, a recorder in tests)."""

    def update_received(self, round_id: int) -> None:
        """Round ``round_id`` accepted an update."""


class CeleryTaskQueue:
    """Sends the worker's tasks by name to the broker (the API never imports worker code)."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("fedledger-api", broker=broker_url)
        self.app.conf.broker_connection_retry_on_startup = True

    def update_received(self, round_id: int) -> None:
        """Queue the ``update_received`` task for ``round_id``."""
        self.app.send_task(UPDATE_RECEIVED_TASK, args=[round_id], retry=True)
