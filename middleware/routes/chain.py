from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from middleware.deps import RateLimited, StateDep
from middleware.errors import responses

router = APIRouter(prefix="/v1/chain", tags=["chain"], dependencies=[RateLimited])


@router.get("/deployments", responses=responses(429, 503))
def deployments(state: StateDep) -> dict[str, Any]:
    """The deployments file (chain id, deploy block, addresses, ABIs): all a client needs to reach the
    contracts. Public information; clients check the chain id against their own RPC endpoint."""
    state.chain()  # 503 when the chain is not deployed
    document: dict[str, Any] = json.loads(state.settings.resolved_deployments_file.read_text())
    return document
