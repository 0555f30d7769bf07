"""/docs and /redoc work offline: every script and style comes from the API itself, and a headless Chromium
that may reach nothing but the API renders the operations on both pages."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from fedledger.chain.devnode import free_port
from fedledger.config import Settings
from fedledger.evidence import Evidence
from middleware.app import create_app

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'api.db'}")


def test_doc_pages_name_only_local_assets_and_the_api_serves_them(app_settings: Settings) -> None:
    client = TestClient(create_app(app_settings))
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        assert response.status_code == 200, page
        urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]|url:\s*['"]([^'"]+)['"]""", response.text)
        urls = [a or b for a, b in urls]
        assert urls, page
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from another origin"
            served = client.get(url)
            assert served.status_code == 200, f"{page}: {url} is not served"
            # Nothing the pages load fetches from another origin by itself (ReDoc's logo came from a CDN).
            assert b"cdn.redoc.ly" not in served.content and b"fastapi.tiangolo.com" not in served.content, (
                url
            )
    assert (
        client.get("/docs-assets/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith(("application/javascript", "text/javascript"))
    )
    # The pages and assets are not API operations.
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def test_the_openapi_document_types_evidence_as_an_enum_of_its_codes(app_settings: Settings) -> None:
    """Callers generate their models from this document: evidence is one of the codes, never free text."""
    document = TestClient(create_app(app_settings)).get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert schemas["Evidence"]["enum"] == [e.value for e in Evidence]
    assert schemas["EvidenceOut"]["properties"]["code"]["$ref"] == "#/components/schemas/Evidence"
    assert set(schemas["EvidenceOut"]["required"]) == {"code", "label", "detail"}
    assert schemas["ContributionOut"]["properties"]["evidence"]["items"] == {
        "$ref": "#/components/schemas/EvidenceOut"
    }
    contributions = document["paths"]["/v1/stats/contributions"]["get"]["responses"]["200"]
    assert contributions["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/ContributionOut"
    }


@pytest.fixture
def api_url(app_settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app_settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.mark.browser
def test_swagger_ui_and_redoc_render_with_no_other_origin_reachable(api_url: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run scripts/install_browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api")
    assert httpx.get(f"{api_url}/healthz", timeout=5).status_code == 200
    elsewhere: list[str] = []
    refused: list[str] = []

    def only_the_api(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(api_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            # A request the Content-Security-Policy stops never reaches the route below; Chromium says so here.
            page.on(
                "console", lambda message: refused.append(message.text) if "Refused" in message.text else None
            )
            page.route("**/*", only_the_api)
            page.goto(f"{api_url}/docs")
            page.locator(".opblock").first.wait_for()
            assert page.locator(".opblock").count() >= 10
            page.get_by_text("/v1/auth/nonce").first.wait_for()
            page.goto(f"{api_url}/redoc")
            page.locator("[data-section-id]").first.wait_for()
            page.get_by_text("fedledger API").first.wait_for()
            page.get_by_alt_text("redocly logo").first.wait_for(state="attached")
        finally:
            browser.close()
    assert not elsewhere, f"the doc pages asked other origins for {elsewhere}"
    assert not refused, f"the doc pages tried to load from other origins: {refused}"
