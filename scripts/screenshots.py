"""Take the README's dashboard screenshots from a running `make run` (after its simulated rounds).

    make run                                   # in one terminal; wait for "Ctrl-C stops everything."
    .venv/bin/python scripts/screenshots.py    # in another: writes docs/screenshots/*.png

Drives Debian's Chromium (/usr/bin/chromium, `bash scripts/install_browser.sh`) with Playwright. The
browser's wallet is a stand-in for MetaMask holding the dev key that `make run` prints (public, dev chain
only): it connects and signs in, and sends no transaction, so the pages show the platform exactly as the
simulation left it. Options: --dashboard, --rpc, --key, --out, --width.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from web3 import Web3  # noqa: E402

from fedledger.devkeys import dev_private_key  # noqa: E402
from tests.visualization.eip1193 import BINDING, INIT_SCRIPT, TestWallet  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
PAGES = (
    ("Overview", "overview"),
    ("Training", "training"),
    ("Contributions", "contributions"),
    ("Token economics", "token"),
    ("Governance", "governance"),
)
TIMEOUT_MS = 90_000


def settle(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=TIMEOUT_MS)
    page.wait_for_timeout(800)  # charts finish their layout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dashboard", default="http://127.0.0.1:8501", help="the dashboard's URL")
    parser.add_argument("--rpc", default="http://127.0.0.1:8545", help="the dev chain's RPC URL")
    parser.add_argument(
        "--key", default=None, help="wallet key to sign in with (default: the dev wallet `make run` prints)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--width", type=int, default=1440, help="browser width in CSS pixels")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print("no /usr/bin/chromium: run `bash scripts/install_browser.sh` first", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    from app.commands.run import printed_wallet_index

    w3 = Web3(Web3.HTTPProvider(args.rpc))
    if not w3.is_connected():
        print(f"no chain at {args.rpc}: start `make run` first", file=sys.stderr)
        return 1
    wallet = TestWallet(w3, args.key or dev_private_key(printed_wallet_index()))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            context = browser.new_context(viewport={"width": args.width, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.expose_function(BINDING, wallet.handle)
            page.add_init_script(INIT_SCRIPT)
            page.goto(args.dashboard)
            page.get_by_role("heading", name="Overview").first.wait_for()
            settle(page)
            # Sign in (connect + SIWE signature): the account's own figures appear on the token page.
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.frame_locator('iframe[data-testid="stCustomComponentV1"]').get_by_role(
                "button", name="Connect wallet"
            ).click()
            page.get_by_text(f"Signed in as {wallet.address}").wait_for()
            settle(page)
            for name, slug in PAGES:
                sidebar.get_by_text(name, exact=True).click()
                page.get_by_role("heading", name=name).first.wait_for()
                settle(page)
                # Streamlit scrolls inside its main block, not the page: grow the window to the content.
                height = page.evaluate(
                    '() => Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], '
                    '[data-testid="stMainBlockContainer"]\')].map((e) => e.scrollHeight), 800)'
                )
                page.set_viewport_size({"width": args.width, "height": int(height) + 80})
                settle(page)
                path = args.out / f"{slug}.png"
                page.screenshot(path=str(path), full_page=True)
                page.set_viewport_size({"width": args.width, "height": 1000})
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        finally:
            browser.close()
    print(f"{len(PAGES)} screenshots in {time.monotonic() - started:.0f} s, signed in as {wallet.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
