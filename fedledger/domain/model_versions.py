"""Model versions: genesis upload, signing, lookup, activation and rollback."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import ModelStatus, ModelVersion, Round, RoundStatus
from fedledger.crypto.eip712 import sign_model
from fedledger.domain import audit
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.errors import Conflict, Invalid, NotFound
from fedledger.payload import UpdateFormatError, decode_weights, model_shapes


def active(session: Session) -> ModelVersion | None:
    """The model version rounds train now, if any."""
    return session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.active)).first()


def require_active(session: Session) -> ModelVersion:
    """The active model version; :class:`Conflict` before the genesis model is uploaded."""
    model = active(session)
    if model is None:
        raise Conflict("no_model", "there is no active model yet; an operator must upload the genesis model")
    return model


def get(session: Session, version: int) -> ModelVersion:
    """Model version ``version``; :class:`NotFound` if it does not exist."""
    model = session.get(ModelVersion, version)
    if model is None:
        raise NotFound("unknown_model", f"model version {version} does not exist")
    return model


def require_no_genesis(session: Session) -> None:
    """:class:`Conflict` once any model version exists: later versions come from rounds (or a rollback)."""
    if session.scalar(select(func.count()).select_from(ModelVersion)):
        raise Conflict(
            "genesis_exists", "a genesis model exists; new versions come from rounds (or roll back)"
        )


def store_version(
    session: Session,
    blobs: BlobStore,
    weights: bytes,
    *,
    signer_key: str,
    chain_id: int,
    verifying_contract: str,
    parent: ModelVersion | None,
    metrics: dict[str, float | None] | None = None,
    produced_by_round_id: int | None = None,
    activate: bool = True,
) -> ModelVersion:
    """Validate, store, sign and record a model version (weights as safetensors float32)."""
    try:
        tensors = decode_weights(weights)
    except UpdateFormatError as exc:
        raise Invalid("invalid_weights", str(exc)) from exc
    if not tensors:
        raise Invalid("invalid_weights", "a model needs at least one tensor")
    spec = {name: list(shape) for name, shape in model_shapes(tensors).items()}
    if parent is not None and spec != parent.spec:
        raise Invalid("spec_mismatch", "the new version's tensors differ from its parent's")
    digest = blobs.put(weights)
    version = ModelVersion(
        parent_id=parent.id if parent else None,
        weights_hash=digest,
        signature="",
        spec=spec,
        status=ModelStatus.active if activate else ModelStatus.rejected,
        produced_by_round_id=produced_by_round_id,
        metrics=metrics or {},
    )
    session.add(version)
    session.flush()
    version.signature = sign_model(
        signer_key,
        chain_id=chain_id,
        verifying_contract=verifying_contract,
        version=version.id,
        model_hash=bytes.fromhex(digest),
    )
    if activate and parent is not None and parent.status == ModelStatus.active:
        parent.status = ModelStatus.superseded
    session.flush()
    return version


def rollback_to(session: Session, version: int, actor: str) -> ModelVersion:
    """Make an earlier version active again. Refused while a round trains on the current model."""
    target = get(session, version)
    current = require_active(session)
    if target.id == current.id:
        raise Conflict("already_active", f"model version {version} is already active")
    if target.status == ModelStatus.rejected:
        raise Conflict(
            "rejected_model",
            f"model version {version} was rejected by validation; it cannot be activated",
        )
    open_round = session.scalars(
        select(Round).where(Round.status.in_([RoundStatus.open, RoundStatus.closing]))
    ).first()
    if open_round is not None:
        raise Conflict(
            "round_in_progress",
            f"round {open_round.id} is {open_round.status.value}; roll back between rounds",
        )
    current.status = ModelStatus.rolled_back
    target.status = ModelStatus.active
    audit.append(session, actor, "model.rollback", str(version), {"from": current.id, "to": target.id})
    session.flush()
    return target
