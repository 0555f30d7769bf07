"""What one API process holds: settings, database sessions, stores, the chain view, the queue, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.orm import Session, sessionmaker

from db.session import read_session_factory, session_factory
from fedledger.chain.deployments import Deployments
from fedledger.chain.reader import ChainReader
from fedledger.config import Settings
from fedledger.domain import deployment
from fedledger.domain.blob_backends import open_blob_store
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.tasks import CeleryTaskQueue, TaskQueue
from middleware.errors import ApiError
from middleware.metrics import Metrics
from middleware.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter


@dataclass
class AppState:
    settings: Settings
    queue: TaskQueue | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        if self.queue is None:
            self.queue = CeleryTaskQueue(self.settings.resolved_broker_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.settings.resolved_database_url)

    @cached_property
    def read_sessions(self) -> sessionmaker[Session]:
        """Sessions that only read (no SQLite write lock): request paths do their checks with these."""
        return read_session_factory(self.settings.resolved_database_url)

    @cached_property
    def blobs(self) -> BlobStore:
        return open_blob_store(self.settings)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        if self.settings.redis_url:
            return RedisRateLimiter(self.settings.redis_url, prefix=f"{self.settings.redis_namespace}:rl:")
        return MemoryRateLimiter()

    _chain: ChainReader | None = None

    def chain(self) -> ChainReader:
        """The chain view, built on first use (the node may start after the API)."""
        if self._chain is None:
            try:
                deployments = Deployments.load(self.settings.resolved_deployments_file)
                # The dev-secret checks trust FEDLEDGER_CHAIN_ID: a server left on the dev chain's id must
                # not talk to another chain.
                if deployments.chain_id != self.settings.chain_id:
                    raise ValueError(
                        f"the deployments are for chain {deployments.chain_id} but FEDLEDGER_CHAIN_ID is "
                        f"{self.settings.chain_id}; set FEDLEDGER_CHAIN_ID to the chain you deploy on"
                    )
                reader = ChainReader(self.settings.chain_rpc_url, deployments)
                reader.check()
                identity = deployments.identity(reader.w3)
            except Exception as exc:
                raise ApiError(
                    503, "chain_unavailable", f"the chain is not reachable or not deployed: {exc}"
                ) from exc
            # The node reached may be another chain reusing the deployment's id and addresses (a restarted dev
            # node redeployed by the same account): nothing it says belongs to this database's rounds.
            try:
                with self.read_sessions() as session:
                    deployment.check(session, deployments, identity)
            except deployment.DeploymentMismatch as exc:
                raise ApiError(503, "deployment_mismatch", exc.detail) from exc
            self._chain = reader
        return self._chain
