"""Every integer path parameter is range-checked before it reaches a query: PostgreSQL's ``integer`` columns
raise on 2^31, which surfaced as a 500 (issue 21 item 11). The routes are read from the app itself, so a
route added later with a bare ``int`` path parameter fails here."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from middleware.deps import MAX_ID
from tests.middleware.conftest import ORGS, World, login, make_update


def int_path_operations(client: TestClient) -> list[tuple[str, str, list[str]]]:
    """(method, path template, integer path parameters) of every operation the app serves."""
    out = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            names = [
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "path" and p["schema"].get("type") == "integer"
            ]
            if names:
                out.append((method.upper(), path, names))
    return out


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_out_of_range_ids_are_refused_on_every_route(world: World) -> None:
    client = world.client
    operations = int_path_operations(client)
    # The routes this is about: a round's page, its updates, a model version and its artefacts.
    paths = {path for _, path, _ in operations}
    assert {"/v1/rounds/{round_id}", "/v1/rounds/{round_id}/updates", "/v1/models/{version}"} <= paths
    organization = login(client, ORGS[0])
    failures = []
    for method, template, names in operations:
        for bad in (MAX_ID + 1, 2**40, 0, -1):
            path = template
            for name in names:
                path = path.replace("{" + name + "}", str(bad))
            # The attacker's strongest request: a well-formed update sealed and signed for that round id,
            # so that nothing but the range check stands before the database.
            envelope, signature = (
                make_update(world, ORGS[0], round_id=bad) if bad > 0 else (b"\x00" * 64, "0x")
            )
            for who in (world.operator, organization):
                try:
                    response = client.request(
                        method,
                        path,
                        content=envelope,
                        headers={
                            **who,
                            "X-Update-Signature": signature,
                            "Content-Type": "application/octet-stream",
                        },
                    )
                except Exception as exc:  # noqa: BLE001 - the test client re-raises what would be a 500
                    failures.append((method, path, 500, repr(exc)[:200]))
                    continue
                if not 400 <= response.status_code < 500:
                    failures.append((method, path, response.status_code, response.text[:200]))
    assert failures == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_largest_id_is_a_plain_not_found(world: World) -> None:
    response = world.client.get(f"/v1/rounds/{MAX_ID}")
    assert response.status_code == 404, response.text
