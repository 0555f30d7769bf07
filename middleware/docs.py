"""The API's documentation pages (/docs, /redoc) with their scripts and styles served by the API itself.

FastAPI's defaults load Swagger UI and ReDoc from a CDN, so the pages are blank offline or behind a
firewall. The assets come from the ``fastapi-offline`` package (Swagger UI 5 and ReDoc 2 bundles, installed
with the API like any dependency) and are served under ``/docs-assets``; no page loads anything from
another origin: ReDoc's Google Fonts are off, its bundle is served with the footer's Redocly logo (fetched
from Redocly's CDN) replaced by an empty inline image, and a Content-Security-Policy keeps the pages to
their own origin.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# The pages' inline bootstrap scripts and styles are theirs; ReDoc runs its search in a blob: worker.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:"
)


# The one URL ReDoc's bundle fetches by itself: the "API docs by Redocly" footer's logo.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E"
REDOC_BUNDLE = f"{ASSETS_URL}/redoc.local.js"
_redoc_js: bytes | None = None


def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle with nothing left that it would fetch from another origin."""
    global _redoc_js
    if _redoc_js is None:
        _redoc_js = (
            (ASSETS_DIR / "redoc.standalone.js")
            .read_bytes()
            .replace(REDOC_LOGO.encode(), EMPTY_IMAGE.encode())
        )
    return _redoc_js


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` from local assets.

    The app must be created with ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages off).
    """

    @app.get(REDOC_BUNDLE, include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript")

    # After the route above: the mount would answer every path under it.
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path") or "")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _same_origin_only(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _same_origin_only(
            get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{REDOC_BUNDLE}",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )
