from __future__ import annotations

from fastapi import APIRouter

from db.models import ServerKey
from fedledger.api.schemas import ServerKeyOut
from fedledger.crypto.keys import KeyAlgorithm
from fedledger.domain import keys
from middleware.deps import OperatorPrincipal, RateLimited, SessionDep, SettingsDep
from middleware.errors import responses

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[RateLimited])


def to_out(k: ServerKey) -> ServerKeyOut:
    return ServerKeyOut(
        key_id=k.kid,
        algorithm=k.algorithm,
        public_key_pem=k.public_key_pem,
        is_current=k.is_current,
        created_at=k.created_at,
        retired_at=k.retired_at,
    )


@router.get("/current", response_model=ServerKeyOut, responses=responses(429, 503))
def current(session: SessionDep) -> ServerKeyOut:
    """The public key to encrypt updates for (its id goes into the envelope header)."""
    return to_out(keys.require_current(session))


@router.get("", response_model=list[ServerKeyOut], responses=responses(429))
def all_keys(session: SessionDep) -> list[ServerKeyOut]:
    """Every server key, current and retired."""
    return [to_out(k) for k in keys.all_keys(session)]


@router.post("/rotate", response_model=ServerKeyOut, responses=responses(401, 403, 429))
def rotate(
    principal: OperatorPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    algorithm: KeyAlgorithm = KeyAlgorithm.x25519,
) -> ServerKeyOut:
    """Make a new key current (operator). The previous key is retired but still opens updates already sealed to it."""
    return to_out(
        keys.rotate(session, keys.ensure_dir(settings.resolved_key_dir), principal.address, algorithm)
    )
