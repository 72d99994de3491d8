# carecast — two commands on a fresh machine: `make demo`, `make test`.
# Each target installs what it needs: uv (from PyPI, into .tools/ when not on PATH), then the locked
# environment (`uv sync --frozen`).

SHELL := /bin/bash
PYTHON ?= python3
PATIENTS ?= 100000
DEMO_PATIENTS ?= 10000
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
CARECAST_HOME ?= $(CURDIR)/.carecast
export CARECAST_HOME

.PHONY: demo test bench ui lint env clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==0.13.8"

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

env: .venv/.synced

demo: env
	$(UV) run --frozen carecast demo --patients $(DEMO_PATIENTS)

test: env
	$(UV) run --frozen pytest

bench: env
	$(UV) run --frozen python -m bench --patients $(PATIENTS)

ui: env
	$(UV) run --frozen python -c "from carecast.dagster_home import prepare_dagster_home; from carecast.home import CarecastHome; prepare_dagster_home(CarecastHome.from_env())"
	DAGSTER_HOME=$(CARECAST_HOME)/dagster $(UV) run --frozen dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: env
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

clean:
	rm -rf .carecast .pytest_cache
