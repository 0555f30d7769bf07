"""The client's requests against the server's OpenAPI document: a renamed route, a changed method or a
route answering another schema than the one the client parses fails here, not in a caller at run time."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from fedledger.api.client import NO_RETRY, FedLedgerApi
from fedledger.config import Settings
from middleware.app import create_app

ADDRESS = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"

# Every endpoint method of the client, called once with plausible arguments.
CALLS: dict[str, Callable[[FedLedgerApi], Any]] = {
    "nonce": lambda api: api.nonce(ADDRESS, "127.0.0.1:8501"),
    "login_with_signature": lambda api: api.login_with_signature("message", "0x00"),
    "register": lambda api: api.register("org", "kid"),
    "me": lambda api: api.me(),
    "deployments": lambda api: api.deployments(),
    "current_key": lambda api: api.current_key(),
    "current_model": lambda api: api.current_model(),
    "model": lambda api: api.model(3),
    "model_weights": lambda api: api.model_weights(3),
    "current_round": lambda api: api.current_round(),
    "round": lambda api: api.round(7),
    "submit_update": lambda api: api.submit_update(7, b"envelope", "0x00"),
    "rewards": lambda api: api.rewards(ADDRESS),
    "upload_genesis": lambda api: api.upload_genesis(b"weights"),
    "open_round": lambda api: api.open_round(60, 2),
    "close_round": lambda api: api.close_round(7),
    "rollback_model": lambda api: api.rollback_model(2),
    "overview": lambda api: api.overview(),
    "round_history": lambda api: api.round_history(10),
    "contributions": lambda api: api.contributions(round_id=7, address=ADDRESS),
    "participants": lambda api: api.participants(),
    "token": lambda api: api.token(),
    "secagg": lambda api: api.secagg(7),
    "secagg_groups": lambda api: api.secagg_groups(7),
    "secagg_join": lambda api: api.secagg_join(7, "0x00"),
    "secagg_send": lambda api: [
        api.secagg_send(7, step, {}) for step in ("keys", "shares", "masked", "unmask")
    ],
}
# The transport, sign-in and lifecycle methods: they call no route of their own.
NOT_ENDPOINTS = {"send", "login", "logout", "use_token", "close", "signed_in", "base_url"}


def _calls_of(name: str) -> list[tuple[str, str, str | None]]:
    """(method, path, schema name the client parses the answer into) of each request ``name`` sends."""
    seen: list[tuple[str, str, str | None]] = []
    http = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})),
        base_url="http://api.test",
    )
    api = FedLedgerApi(http=http, retry=NO_RETRY)
    api.use_token("token")

    def parse(response: httpx.Response, schema: type[BaseModel]) -> None:
        seen.append((response.request.method, response.request.url.path, schema.__name__))

    def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = original_send(method, path, **kwargs)
        seen.append((method, response.request.url.path, None))
        return response

    original_send = api.send
    api._parse = parse  # type: ignore[method-assign,assignment]
    api._parse_list = parse  # type: ignore[method-assign,assignment]
    api.send = send  # type: ignore[method-assign]
    # The canned {} answer is not a deployments document: the request was made all the same.
    with contextlib.suppress(Exception):
        CALLS[name](api)
    # One entry per request: the send, completed with the schema its answer was parsed into.
    requests = [(m, p) for m, p, schema in seen if schema is None]
    schemas = {(m, p): schema for m, p, schema in seen if schema is not None}
    return [(m, p, schemas.get((m, p))) for m, p in requests]


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("contract")
    return create_app(Settings(data_dir=root / "var", database_url=f"sqlite:///{root / 'api.db'}")).openapi()


def _operation(openapi: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for template, operations in openapi["paths"].items():
        pattern = "^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return dict(operations[method.lower()])
    return None


def _answered_schema(operation: dict[str, Any]) -> str | None:
    """The name of the schema the operation's 2xx JSON answer refers to (its items' for a list)."""
    for status, answer in operation["responses"].items():
        if not status.startswith("2"):
            continue
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
        if ref:
            return str(ref).rsplit("/", 1)[-1]
    return None


def test_every_endpoint_method_of_the_client_is_checked() -> None:
    public = {
        name
        for name, _ in inspect.getmembers(FedLedgerApi)
        if not name.startswith("_") and name not in NOT_ENDPOINTS
    }
    assert public == set(CALLS), "add the new method to CALLS (or NOT_ENDPOINTS if it calls no route)"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_client_calls_only_routes_the_server_serves(name: str, openapi: dict[str, Any]) -> None:
    calls = _calls_of(name)
    assert calls, f"{name} sent no request"
    for method, path, schema in calls:
        operation = _operation(openapi, method, path)
        assert operation is not None, f"{name}: {method} {path} is not in the server's OpenAPI document"
        if schema is not None:
            assert _answered_schema(operation) == schema, (
                f"{name}: the client parses {method} {path} as {schema}, the server answers "
                f"{_answered_schema(operation)}"
            )


def test_a_renamed_route_fails_the_contract(openapi: dict[str, Any]) -> None:
    renamed = {"paths": {p.replace("/rounds", "/round"): ops for p, ops in openapi["paths"].items()}}
    (method, path, _), *_ = _calls_of("open_round")
    assert _operation(openapi, method, path) is not None
    assert _operation(renamed, method, path) is None
