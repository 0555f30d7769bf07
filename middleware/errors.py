"""One error shape for every 4xx/5xx the API returns: ``{"error": code, "detail": message}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fedledger.domain import errors as domain


class ErrorBody(BaseModel):
    error: str
    detail: str


class ApiError(Exception):
    """Raised by routes and services; becomes a JSON error response with a machine-readable code."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def unauthorized(code: str, detail: str) -> ApiError:
    return ApiError(401, code, detail, {"WWW-Authenticate": "Bearer"})


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, invalid or expired credentials",
    403: "Authenticated but not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    410: "No longer accepted",
    413: "Payload too large",
    422: "Semantically invalid",
    429: "Rate limit exceeded",
    503: "A dependency (database, broker, chain) is unavailable",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the error statuses a route can return."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


# The HTTP status of each kind of domain refusal (fedledger.domain.errors).
DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.Malformed: 400,
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Gone: 410,
    domain.TooLarge: 413,
    domain.Invalid: 422,
    domain.Unavailable: 503,
}


def http_error(exc: domain.DomainError) -> ApiError:
    """The API error for a domain refusal (an unmapped kind is a programming error: 500)."""
    for kind in type(exc).__mro__:
        if kind in DOMAIN_STATUS:
            return ApiError(DOMAIN_STATUS[kind], exc.code, exc.detail)
    return ApiError(500, exc.code, exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.error_code = exc.code
        return JSONResponse(
            status_code=exc.status, content={"error": exc.code, "detail": exc.detail}, headers=exc.headers
        )

    @app.exception_handler(domain.DomainError)
    async def _domain_error(request: Request, exc: domain.DomainError) -> JSONResponse:
        return await _api_error(request, http_error(exc))
