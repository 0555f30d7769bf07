"""The packages import each other in one direction only (docs/architecture.md, "Layers").

Read from the source with ``ast`` (every ``import`` and absolute ``from ... import``, also those inside
functions), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("db", "fedledger", "aggregator", "middleware", "client", "visualization", "app")

# What each package may NOT import (its own layer and below are allowed).
FORBIDDEN: dict[str, set[str]] = {
    "fedledger": {"aggregator", "middleware", "client", "visualization", "app"},
    "aggregator": {"middleware", "client", "visualization", "app"},
    "middleware": {"aggregator", "client", "visualization", "app"},
    "client": {"db", "aggregator", "middleware", "visualization", "app"},
    "visualization": {"db", "aggregator", "middleware", "app"},
    "app": set(),
}


def imports_of(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) for every absolute import in ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(str(path.relative_to(ROOT)), node.lineno, name) for name in names]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    upward = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of(package)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not upward, "\n".join(upward)


def test_middleware_is_imported_only_by_itself_and_the_app() -> None:
    outside = [
        f"{file}:{line} imports {name}"
        for package in PACKAGES
        if package not in ("middleware", "app")
        for file, line, name in imports_of(package)
        if name.split(".")[0] == "middleware"
    ]
    assert not outside, "\n".join(outside)


def test_db_is_the_ground_floor() -> None:
    # Even Alembic's env.py gets its URL from the caller rather than from the core's settings.
    wider = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of("db")
        if name.split(".")[0] in PACKAGES and name.split(".")[0] != "db"
    ]
    assert not wider, "\n".join(wider)


def test_the_domain_builds_only_on_db_and_the_core() -> None:
    allowed = {"db", "fedledger"}
    wider = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of("fedledger")
        if file.startswith("fedledger/domain/")
        and name.split(".")[0] in PACKAGES
        and name.split(".")[0] not in allowed
    ]
    assert not wider, "\n".join(wider)
    # ...and the rest of the core does not lean on the domain (it sits above crypto, payload, chain).
    leaning = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of("fedledger")
        if not file.startswith("fedledger/domain/") and name.startswith("fedledger.domain")
    ]
    assert not leaning, "\n".join(leaning)


def test_routes_call_domain_services_instead_of_querying() -> None:
    """A route parses, authorizes, calls a domain service and serializes: it builds no query (no
    ``sqlalchemy`` import) and uses its session only to hand it to a service (no ``session.<method>``)."""
    found = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of("middleware")
        if file.startswith("middleware/routes/") and name.split(".")[0] == "sqlalchemy"
    ]
    for path in sorted((ROOT / "middleware" / "routes").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} calls session.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "session"
        ]
    assert not found, "\n".join(found)


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_stands_below_the_database() -> None:
    """The core (config, crypto, chain, payload, models, privacy, datasets, devkeys, flower) is what an
    organization's SDK and the dashboard build on: it holds no database code, so they never need one."""
    found = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of("fedledger")
        if not file.startswith("fedledger/domain/") and _top(name) in {"db", "sqlalchemy", "alembic"}
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", ["client", "visualization"])
def test_the_sdk_and_the_dashboard_use_the_api_not_the_domain(package: str) -> None:
    """An organization's SDK and the dashboard read the platform through its API: they may import the core,
    never the domain services or the database they run on."""
    found = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of(package)
        if name.startswith("fedledger.domain") or _top(name) in {"db", "sqlalchemy", "alembic", "celery"}
    ]
    assert not found, "\n".join(found)


def test_the_pure_aggregation_has_no_io() -> None:
    """Only aggregator/worker/ (Celery, the database, the chain's writes) does I/O; the rules, the scores and
    the round computation are pure and run unchanged in Flower's local mode."""
    found = [
        f"{file}:{line} imports {name}"
        for file, line, name in imports_of("aggregator")
        if not file.startswith("aggregator/worker/")
        and (
            name.startswith(("fedledger.domain", "aggregator.worker"))
            or _top(name) in {"db", "sqlalchemy", "alembic", "celery", "kombu", "redis", "web3"}
        )
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_are_absolute(package: str) -> None:
    """A relative import would pass every check above unseen (they read absolute module names)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level > 0
        ]
    assert not found, "\n".join(found)
