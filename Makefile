# Two commands: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
# The demo's temporary Prefect API can take longer than Prefect's 20 s default to start on a busy laptop.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: demo demo-tabular test test-slow test-all install browser postgres clean serve serve-model drill screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Debian's chromium, for the UI tests (Playwright drives it; it downloads no browser).
browser:
	infra/install-chromium.sh

# PostgreSQL's server binaries, for the cluster test's Prefect server (it starts its own throwaway cluster).
postgres:
	infra/install-postgres.sh

## Build the embedded digits classifier and release it to .lepton/registry.
demo: install
	$(BIN)/python -m flows.build

## Build scikit-learn's breast cancer table instead (configs/tabular.json); your own CSV: --set data.source=FILE.
demo-tabular: install
	$(BIN)/python -m flows.build --config configs/tabular.json

## The loop on this machine: Prefect server on 127.0.0.1, work pool, every deployment, a worker.
serve: install
	BIN=$(BIN) infra/serve.sh

## The online model server on the production release (http://127.0.0.1:8080/v2; LEPTON_SERVE_TOKEN for auth).
serve-model: install
	$(BIN)/python -m serve $(ARGS)

## Drift drill: build -> clean batch -> shifted batch -> drift event -> triggered build run.
drill: install
	$(BIN)/python infra/drill.py

## Fast and integration tests (the CI gate).
test: install browser postgres
	$(BIN)/python -m pytest -m "not slow"

## Heavier tests: other architectures, longer runs.
test-slow: install
	$(BIN)/python -m pytest -m slow

test-all: install browser postgres
	$(BIN)/python -m pytest

## The README's screenshots of the UI (docs/ui/), made by the UI tests' own browser code.
screenshots: install browser
	LEPTON_UI_SCREENSHOTS=docs/ui $(BIN)/python -m pytest -q tests/integration/test_ui.py

clean:
	rm -rf .lepton .pytest_cache
