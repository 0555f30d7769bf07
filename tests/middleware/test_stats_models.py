"""The stats routes return their response models, not dicts that a response_model filters: a key the route
sets and the schema lacks is then a type error (mypy checks the model's keywords), never a field silently
dropped on the wire."""

from __future__ import annotations

import typing

from fastapi.routing import APIRoute

from middleware.routes import stats


def test_every_stats_route_returns_its_response_model() -> None:
    routes = [r for r in stats.router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 5
    for route in routes:
        returned = typing.get_type_hints(route.endpoint)["return"]
        assert returned == route.response_model, (
            f"{route.path} returns {returned}, its response model is {route.response_model}"
        )
