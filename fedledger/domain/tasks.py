"""The one call the API makes into the aggregator: "close round N" (sent once per round, by the
submission whose insert reached the quorum: see fedledger.domain.pipeline).

Behind a small interface so the API never imports worker code; the Celery implementation sends the task
by name to the broker the settings name.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

UPDATE_RECEIVED_TASK = "fedledger.rounds.update_received"
CLOSE_TASK = "fedledger.rounds.close"
POST_TASK = "fedledger.rounds.post"
TICK_TASK = "fedledger.rounds.tick"
EXECUTE_SLASHES_TASK = "fedledger.chain.execute_slashes"
ANCHOR_AUDIT_TASK = "fedledger.chain.anchor_audit"
# The passes of a close sharded across workers (aggregator.worker.shards); results go to the backend, and
# each pass's chord calls SHARD_STEP_TASK with them.
SHARD_STATISTICS_TASK = "fedledger.rounds.shard_statistics"
SHARD_DERIVE_TASK = "fedledger.rounds.shard_derive"
SHARD_COMBINE_TASK = "fedledger.rounds.shard_combine"
SHARD_STEP_TASK = "fedledger.rounds.shard_step"
# The beat's sweep of the temporary blobs a crashed sharded close left (aggregator.worker.temporaries).
SWEEP_TEMPORARIES_TASK = "fedledger.blobs.sweep_temporaries"


class TaskQueue(Protocol):
    """How the API tells the worker that something happened (Celery in production, a recorder in tests)."""

    def request_close(self, round_id: int) -> None:
        """Round ``round_id`` reached its quorum: close it (sent once per round)."""


class CeleryTaskQueue:
    """Sends the worker's tasks by name to the broker (the API never imports worker code)."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("fedledger-api", broker=broker_url)
        self.app.conf.broker_connection_retry_on_startup = True

    def request_close(self, round_id: int) -> None:
        """Queue the close task for ``round_id``."""
        self.app.send_task(CLOSE_TASK, args=[round_id], retry=True)
