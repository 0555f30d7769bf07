from __future__ import annotations

from eth_account import Account
from fastapi import APIRouter, Request
from fastapi.responses import Response

from db.models import ModelVersion
from fedledger.api.schemas import ModelOut
from fedledger.crypto.package import export_package
from fedledger.datasets import input_contract
from fedledger.domain import audit
from fedledger.domain import model_versions as models
from middleware.deps import OperatorPrincipal, PathId, RateLimited, SessionDep, StateDep
from middleware.errors import ApiError, responses

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[RateLimited])

OCTET = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def to_out(state: StateDep, m: ModelVersion) -> ModelOut:
    deployments = state.chain().deployments
    return ModelOut(
        version=m.id,
        parent=m.parent_id,
        weights_hash=m.weights_hash,
        signature=m.signature,
        signer=Account.from_key(state.settings.resolved_model_signer_key).address,
        chain_id=deployments.chain_id,
        verifying_contract=deployments.addresses["ContributionLedger"],
        spec=m.spec,
        status=m.status.value,
        metrics=m.metrics,
        produced_by_round=m.produced_by_round_id,
        created_at=m.created_at,
        input_contract=_contract(state.settings.holdout, m.spec),
    )


def _contract(holdout: str, spec: dict[str, list[int]]) -> dict[str, object] | None:
    """The holdout task's input contract, if this model reads that many features (a first tensor of
    another input width was not made for the task, and no contract is claimed for it)."""
    try:
        contract = input_contract(holdout)
    except (OSError, ValueError):
        return None
    widths = {shape[0] for shape in spec.values() if len(shape) == 2}
    return contract if contract["features"] in widths else None


@router.get("/current", response_model=ModelOut, responses=responses(409, 429, 503))
def current(session: SessionDep, state: StateDep) -> ModelOut:
    """The active global model's metadata and server signature."""
    return to_out(state, models.require_active(session))


@router.get("/{version}", response_model=ModelOut, responses=responses(404, 429, 503))
def get(version: PathId, session: SessionDep, state: StateDep) -> ModelOut:
    return to_out(state, models.get(session, version))


@router.get("/{version}/weights", response_class=Response, responses={200: OCTET, **responses(404, 429)})
def weights(version: PathId, session: SessionDep, state: StateDep) -> Response:
    """The safetensors weights; ``X-Model-Hash`` and ``X-Model-Signature`` let the client verify them."""
    m = models.get(session, version)
    return Response(
        state.blobs.get(m.weights_hash),
        media_type="application/octet-stream",
        headers={
            "X-Model-Hash": m.weights_hash,
            "X-Model-Signature": m.signature,
            "X-Model-Version": str(m.id),
        },
    )


@router.get(
    "/{version}/package",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, **responses(404, 429, 503)},
)
def package(version: PathId, session: SessionDep, state: StateDep) -> Response:
    """A signed package (weights + manifest) for offline verification with scripts/verify_model_package.py."""
    m = models.get(session, version)
    deployments = state.chain().deployments
    data = export_package(
        state.blobs.get(m.weights_hash),
        {"spec": m.spec, "metrics": m.metrics, "parent": m.parent_id},
        m.signature,
        chain_id=deployments.chain_id,
        verifying_contract=deployments.addresses["ContributionLedger"],
        version=m.id,
    )
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="fedledger-model-v{m.id}.zip"'},
    )


@router.post(
    "",
    response_model=ModelOut,
    status_code=201,
    responses=responses(401, 403, 409, 413, 422, 429, 503),
    openapi_extra={"requestBody": {"required": True, **OCTET}},
)
async def upload_genesis(request: Request, principal: OperatorPrincipal, state: StateDep) -> ModelOut:
    """Upload the genesis model (operator; safetensors float32). Later versions come from rounds."""
    body = await request.body()
    if len(body) > state.settings.max_update_bytes * 4:
        raise ApiError(413, "too_large", "model file exceeds the size limit")
    deployments = state.chain().deployments
    with state.sessions.begin() as session:
        models.require_no_genesis(session)
        m = models.store_version(
            session,
            state.blobs,
            body,
            signer_key=state.settings.resolved_model_signer_key,
            chain_id=deployments.chain_id,
            verifying_contract=deployments.addresses["ContributionLedger"],
            parent=None,
            metrics={},
        )
        audit.append(
            session, principal.address, "model.genesis", str(m.id), {"hash": m.weights_hash, "spec": m.spec}
        )
        return to_out(state, m)


@router.post(
    "/{version}/rollback", response_model=ModelOut, responses=responses(401, 403, 404, 409, 429, 503)
)
def rollback(version: PathId, principal: OperatorPrincipal, session: SessionDep, state: StateDep) -> ModelOut:
    """Make an earlier model version active again (operator), recorded in the audit log."""
    return to_out(state, models.rollback_to(session, version, principal.address))
