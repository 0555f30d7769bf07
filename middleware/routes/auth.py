from __future__ import annotations

from fastapi import APIRouter

from fedledger.api.schemas import LoginRequest, NonceRequest, NonceResponse, TokenResponse
from middleware import auth
from middleware.deps import NonceRateLimited, RateLimited, SessionDep, SettingsDep, StateDep
from middleware.errors import ApiError, responses

router = APIRouter(prefix="/v1/auth", tags=["auth"], dependencies=[RateLimited])


@router.post(
    "/nonce", response_model=NonceResponse, responses=responses(422, 429), dependencies=[NonceRateLimited]
)
def nonce(body: NonceRequest, session: SessionDep, settings: SettingsDep) -> NonceResponse:
    """Issue a single-use, expiring nonce for this address and the EIP-4361 message to sign."""
    challenge = auth.issue_challenge(session, settings, body.address, domain=body.domain)
    return NonceResponse(
        nonce=challenge.nonce,
        message=challenge.message,
        issued_at=challenge.issued_at,
        expires_at=challenge.expires_at,
    )


@router.post("/login", response_model=TokenResponse, responses=responses(401, 429))
def login(body: LoginRequest, state: StateDep, settings: SettingsDep) -> TokenResponse:
    """Exchange a signed EIP-4361 message for a short-lived JWT."""
    # Its own transaction: a failed login must not roll back, and a successful one must commit the nonce
    # consumption before the token leaves the server.
    with state.sessions.begin() as session:
        try:
            address = auth.verify_login(session, settings, body.message, body.signature)
        except ApiError as exc:
            state.metrics.logins.labels(exc.code).inc()
            raise
    token, expires = auth.issue_token(settings, address)
    state.metrics.logins.labels("ok").inc()
    return TokenResponse(
        access_token=token, expires_at=expires, address=address, roles=auth.roles_for(settings, address)
    )
