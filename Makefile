# fedledger: `make run` starts the platform on embedded defaults; `make test` installs and runs every test.
# Both are idempotent: installs are keyed on the files that declare them (stamps under .stamps/).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps

.PHONY: run test install install-python install-node test-python test-contracts lint clean

install: install-python install-node

install-python: $(STAMPS)/python
$(STAMPS)/python: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install-node: $(STAMPS)/node
$(STAMPS)/node: blockchain/package.json blockchain/package-lock.json
	@mkdir -p $(STAMPS)
	cd blockchain && npm ci --no-audit --no-fund --loglevel=error
	cd blockchain && npx hardhat compile --quiet
	@touch $@

test-contracts: install-node
	cd blockchain && npx hardhat test

test-python: install
	$(PY) -m pytest

test: test-contracts test-python

run: install
	$(VENV)/bin/fedledger run

lint: install-python
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(STAMPS) var
