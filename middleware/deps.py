"""FastAPI dependencies, as ``Annotated`` aliases routes declare in their signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from db.session import transaction
from fedledger.config import Settings
from middleware.auth import Principal, decode_token
from middleware.errors import ApiError, unauthorized
from middleware.state import AppState


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain ``def`` dependency in the thread pool, a hop (~40 us of CPU) for an
    # attribute read, on every request.
    state: AppState = request.app.state.fl
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(state: StateDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises."""
    with transaction(state.sessions) as session:
        yield session


# scope="function": commit before the response is sent. With the default ("request") the commit would run
# after the client already has its 200, and its next request could miss what it just wrote.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="JWT from the sign-in (login) route")


def _client_ip(request: Request) -> str:
    # The TCP peer, or the client a trusted proxy names (FEDLEDGER_TRUSTED_PROXIES, see middleware.app);
    # never a header an untrusted peer sent.
    return request.client.host if request.client else "unknown"


def _limit(state: AppState, key: str, limit: int) -> None:
    allowed, reset = state.rate_limiter.hit(key, limit)
    if not allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests from {key}; retry in {reset} s",
            {"Retry-After": str(reset)},
        )


def ip_rate_limit(request: Request, state: StateDep) -> None:
    _limit(state, f"ip:{_client_ip(request)}", state.settings.rate_limit_per_minute_ip)


def nonce_rate_limit(request: Request, state: StateDep) -> None:
    """Each nonce is a stored row until it expires: this bounds what one IP can keep stored."""
    _limit(state, f"ip-nonce:{_client_ip(request)}", state.settings.rate_limit_per_minute_ip_nonce)


def register_rate_limit(request: Request, state: StateDep) -> None:
    """Each registration attempt reads the chain: bounded per IP, whichever wallets it signs in with."""
    _limit(state, f"ip-register:{_client_ip(request)}", state.settings.rate_limit_per_minute_ip_register)


def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized(
            "missing_token", "send Authorization: Bearer <token> from the sign-in (login) route"
        )
    principal = decode_token(state.settings, credentials.credentials)
    # The per-address limit needs the verified subject, so it runs here rather than in a middleware.
    _limit(state, f"addr:{principal.address}", state.settings.rate_limit_per_minute_address)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_operator(principal: CurrentPrincipal) -> Principal:
    if not principal.is_operator:
        raise ApiError(403, "operator_only", "this action needs the operator role")
    return principal


OperatorPrincipal = Annotated[Principal, Depends(get_operator)]


def get_round_runner(principal: CurrentPrincipal) -> Principal:
    if not principal.may_run_rounds:
        raise ApiError(403, "round_runner_only", "this action needs the operator or the round-runner role")
    return principal


RoundRunnerPrincipal = Annotated[Principal, Depends(get_round_runner)]
RateLimited = Depends(ip_rate_limit)
NonceRateLimited = Depends(nonce_rate_limit)
RegisterRateLimited = Depends(register_rate_limit)

# Row ids are 32-bit on every database; bigger numbers are refused as 422 before they reach a query.
MAX_ID = 2_147_483_647
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
