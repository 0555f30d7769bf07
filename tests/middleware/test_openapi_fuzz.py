"""Schemathesis over the OpenAPI document: no generated request makes the API answer 5xx.

Runs against a real app (SQLite, the session's Hardhat node, real Redis), with a genesis model and an
open round so the generated requests reach the deep paths, once anonymous and once as the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from fedledger.config import Settings
from fedledger.domain.tasks import CeleryTaskQueue
from fedledger.payload import encode_weights
from middleware.app import create_app
from tests.middleware.conftest import MODEL, OPERATOR, REDIS_BROKER_DB, REDIS_RATE_DB, address_of, login

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, dev_chain, deployments_file: Path
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    redis.Redis.from_url(REDIS_RATE_DB).flushdb()
    redis.Redis.from_url(REDIS_BROKER_DB).flushdb()
    root = tmp_path_factory.mktemp("fuzz")
    config = Settings(
        data_dir=root / "var",
        database_url=f"sqlite:///{root / 'api.db'}",
        redis_url=REDIS_RATE_DB,
        broker_url=REDIS_BROKER_DB,
        chain_rpc_url=dev_chain[0].rpc_url,
        deployments_file=deployments_file,
        siwe_domain="testserver",
        public_url="http://testserver",
        operator_addresses=[address_of(OPERATOR)],
        rate_limit_per_minute_ip=10**9,
        rate_limit_per_minute_address=10**9,
        max_update_bytes=64 * 1024,
    )
    app = create_app(config, queue=CeleryTaskQueue(config.resolved_broker_url))
    with TestClient(app) as client:
        operator = login(client, OPERATOR)
        assert client.post("/v1/models", content=encode_weights(MODEL), headers=operator).status_code == 201
        assert client.post("/v1/rounds", json={"duration_seconds": 3600}, headers=operator).status_code == 201
        yield client, operator


def test_no_request_makes_the_server_fail(live: tuple[TestClient, dict[str, str]]) -> None:
    client, operator = live
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(checks=[schemathesis.checks.not_a_server_error])
            case.call_and_validate(headers=operator, checks=[schemathesis.checks.not_a_server_error])

        try:
            run()
        except Exception as exc:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {exc}") from exc
