"""The wheel ``pip install .`` builds (the Docker image's install) runs the dashboard.

The wheel is built the way the Dockerfile builds it (``pip wheel``, isolated build, with the oldest setuptools
the build requirement allows), installed into a fresh venv, and its ``fedledger dashboard`` is started from
there: the Streamlit server answers, serves the wallet component's files from the installed package, and a
headless Chromium renders a page without a StreamlitAPIException.

The fresh venv borrows the project venv's third-party packages through a path entry (installing numpy, web3,
streamlit... again would take minutes and the network); the project's own packages come from the wheel only,
which the test checks before starting anything.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedledger.chain.devnode import free_port
from fedledger.config import PROJECT_ROOT

pytestmark = [pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
PACKAGE_FILES = (
    "visualization/wallet/frontend/index.html",
    "visualization/wallet/frontend/wallet.js",
    "db/migrations/env.py",
    "db/migrations/script.py.mako",
)


def oldest_setuptools() -> str:
    """The lowest version the build requirement admits, as a constraint (``>=77`` -> ``setuptools~=77.0``)."""
    requires = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    (spec,) = [r for r in requires if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", spec.replace(" ", ""))
    assert match, f"expected a plain lower bound on setuptools, got {spec!r}"
    return f"setuptools~={match.group(1)}.0"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    constraints = out / "build-constraints.txt"
    constraints.write_text(oldest_setuptools() + "\n")
    # A copy of the tracked tree, so the build writes no build/ or egg-info into the checkout.
    source = out / "src"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = source / name.decode()
        if (PROJECT_ROOT / name.decode()).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((PROJECT_ROOT / name.decode()).read_bytes())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--progress-bar",
            "off",
            "--build-constraint",
            str(constraints),
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("fedledger-*.whl")
    return built


def test_the_oldest_allowed_setuptools_builds_the_licence_expression(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_the_wheel_holds_the_files_the_code_opens(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [name for name in PACKAGE_FILES if name not in names]
    assert not missing, f"not in the wheel: {missing}"


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Third-party packages from the project venv, after the wheel's own (a plain path line: the project
    # venv's .pth files, among them the editable install of this checkout, are not processed).
    (site / "zz_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import visualization.wallet, db, fedledger; print(visualization.wallet.FRONTEND)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
        env=_clean_env(),
    ).stdout.strip()
    assert Path(where).is_relative_to(site), f"the dashboard was imported from {where}, not the wheel"
    return root


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FEDLEDGER_")}
    env.update(extra)
    return env


@pytest.fixture
def installed_dashboard(venv: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "fedledger"), "dashboard", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=_clean_env(
                FEDLEDGER_API_URL=f"http://127.0.0.1:{free_port()}",
                FEDLEDGER_CHAIN_RPC_URL=f"http://127.0.0.1:{free_port()}",
                FEDLEDGER_DATA_DIR=str(tmp_path / "data"),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the dashboard exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def test_the_installed_dashboard_serves_its_wallet_component_and_renders(installed_dashboard: str) -> None:
    url = installed_dashboard
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium for the page check: run scripts/install_browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("heading", name="Overview").first.wait_for()
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
            # No API runs here: the page says so, and the wallet button (the component) still renders.
            page.get_by_text("The API is not reachable").first.wait_for()
            frame = page.frame_locator('iframe[data-testid="stCustomComponentV1"]')
            frame.get_by_role("button", name="Connect wallet").wait_for()
            text = page.inner_text("body")
            assert "StreamlitAPIException" not in text and "No such component directory" not in text
        finally:
            browser.close()
    # The page's run declared the component: Streamlit serves its files from /component/<module>.<name>/.
    for name in ("index.html", "wallet.js"):
        response = httpx.get(f"{url}/component/visualization.wallet.fedledger_wallet/{name}", timeout=10)
        assert response.status_code == 200, (name, response.status_code)
