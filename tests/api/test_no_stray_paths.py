"""The HTTP contract is spelled in one place: no "/v1/" string outside the typed client and the routes.

Read with ``ast`` from every product module and script (docstrings, which explain, are allowed), so a
caller that writes a path by hand, instead of calling ``fedledger.api.client.FedLedgerApi`` or
``fedledger.api.paths``, fails here and cannot drift from a renamed route.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("fedledger/api/", "middleware/routes/")
SKIPPED = {".venv", "node_modules", ".git", "tests", "build", "dist", "var"}


def _docstrings(tree: ast.AST) -> set[int]:
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return docs


def stray_paths(root: Path) -> list[str]:
    """``file:line`` of every "/v1/" string literal outside the allowed packages."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIPPED & set(rel.parts) or rel.as_posix().startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        hits += [
            f"{rel.as_posix()}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "/v1/" in node.value
            and id(node) not in docs
        ]
    return hits


def test_no_v1_path_is_spelled_outside_the_client_and_the_routes() -> None:
    assert stray_paths(ROOT) == []


def test_the_check_finds_a_hand_written_path(tmp_path: Path) -> None:
    (tmp_path / "caller.py").write_text('"""Docstrings may say /v1/rounds."""\nURL = "/v1/rounds"\n')
    (tmp_path / "fedledger" / "api").mkdir(parents=True)
    (tmp_path / "fedledger" / "api" / "paths.py").write_text('ROUNDS = "/v1/rounds"\n')
    assert stray_paths(tmp_path) == ["caller.py:2"]
