# fedledger: `make run` starts the platform on embedded defaults; `make test` installs and runs every test.
# Both are idempotent: installs are keyed on the files that declare them (stamps under .stamps/).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps

.PHONY: run test install install-python install-node install-browser test-python test-contracts bench lint clean

install: install-python install-node

# Debian's Chromium for the dashboard's browser test (apt; nothing is downloaded by a test tool).
install-browser: $(STAMPS)/browser
$(STAMPS)/browser: scripts/install_browser.sh $(STAMPS)/python
	@mkdir -p $(STAMPS)
	bash scripts/install_browser.sh $(PY)
	@touch $@

install-python: $(STAMPS)/python
# constraints.txt pins every package, so pip resolves nothing and every install gets the same versions.
$(STAMPS)/python: pyproject.toml constraints.txt
	@mkdir -p $(STAMPS)
	@echo "==> Python packages into $(VENV) (first time: a minute or two; pip shows each package)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	@touch $@

install-node: $(STAMPS)/node
$(STAMPS)/node: blockchain/package.json blockchain/package-lock.json
	@mkdir -p $(STAMPS)
	@echo "==> Node packages into blockchain/node_modules (npm ci), then the contracts (hardhat compile)"
	cd blockchain && npm ci --no-audit --no-fund --loglevel=error
	cd blockchain && npx hardhat compile --quiet
	@touch $@

# The contract suite runs once, instrumented (solidity-coverage), and fails below 100 % lines / 95 % branches;
# the gas bounds need the real bytecode, so the gas test runs on its own. The instrumented build goes to
# blockchain/.coverage_build (HARDHAT_BUILD_DIR), never to the artifacts/ the Python tests deploy.
test-contracts: install-node
	cd blockchain && HARDHAT_BUILD_DIR=.coverage_build npx hardhat coverage && node scripts/checkCoverage.js
	cd blockchain && npx hardhat test test/Gas.test.js

# Two pytest-xdist workers: the tests of shared services in one, in the usual order, the worker platform's (their
# own chain and Redis) in the other at the same time, and the modules that use none taken by either
# (tests/conftest.py, pytest_xdist_make_scheduler). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS)

test-python: install install-browser
	$(PYTEST)

# Lint and the contract suite share nothing with the Python suite (see test-contracts), so they run beside it:
# the Python tests spend much of their time waiting on their services and subprocesses, which leaves a core
# to the others. The contracts are compiled first, so that nobody writes artifacts/ while the Python tests
# deploy it. Lint's and the contracts' output is kept in var/test-side.log and printed after pytest's
# (`make lint` alone for a quick check).
test: install install-browser
	cd blockchain && npx hardhat compile --quiet
	@mkdir -p var
	@echo "==> lint and the contract tests (coverage, gas) beside the Python tests; their output follows pytest's"
	@$(MAKE) --no-print-directory -k lint test-contracts > var/test-side.log 2>&1 & side=$$!; \
	$(PYTEST); python=$$?; \
	wait $$side; side=$$?; \
	echo "==> lint and contract tests (var/test-side.log): exit status $$side"; cat var/test-side.log; \
	exit $$(( python != 0 || side != 0 ))

run: install
	$(VENV)/bin/fedledger run

# Benchmarks print figures (docs/benchmarks.md); they are not tests.
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) scripts/bench_aggregation.py
	$(PY) scripts/attack_eval.py
	$(PY) scripts/bench_submissions.py

# Lint, formatting and strict typing; the files under strict mypy are listed in pyproject.toml ([tool.mypy]).
# The contracts (blockchain/package.json's lint): solhint (.solhint.json, its exceptions justified in
# blockchain/README.md) and prettier-plugin-solidity's format (`npx prettier --write 'contracts/**/*.sol'`).
lint: install-python install-node
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd blockchain && npm run --silent lint

clean:
	rm -rf $(STAMPS) var
