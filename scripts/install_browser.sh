#!/usr/bin/env bash
# Installs what the dashboard's browser tests (pytest -m browser) need: Debian's Chromium and Playwright for
# Python. Playwright drives /usr/bin/chromium; it never downloads a browser of its own (no `playwright install`).
# Idempotent; needs root (or sudo) for apt-get. Usage: scripts/install_browser.sh [path/to/python]
set -euo pipefail

PYTHON="${1:-$(dirname "$0")/../.venv/bin/python}"

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version

if ! "$PYTHON" -c "import playwright" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet "playwright>=1.45"
fi
"$PYTHON" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
