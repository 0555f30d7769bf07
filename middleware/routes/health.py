from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from kombu.connection import Connection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from db.session import ping
from fedledger.api.schemas import HealthOut
from middleware.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is up (answered on the event loop: never queued behind work in the thread pool)."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "A dependency is down"}},
)
def readyz(state: StateDep) -> JSONResponse:
    """Database, broker and chain are all reachable."""
    checks: dict[str, str] = {}
    try:
        ping(state.sessions)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"error: {type(exc).__name__}: {exc}"[:300]
    try:
        # kombu ships no type hints: its Connection is an untyped third-party API.
        with Connection(state.settings.resolved_broker_url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}: {exc}"[:300]
    try:
        state.chain().check()
        checks["chain"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["chain"] = f"error: {getattr(exc, 'detail', exc)}"[:300]
    ok = all(v == "ok" for v in checks.values())
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(state: StateDep) -> Response:
    """Prometheus metrics of this API process."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
