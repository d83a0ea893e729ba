# Two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export PLASMA_RECIPE ?= recipes/default.yaml

.PHONY: setup demo test test-fast browser-deps ui bench clean-store

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU wheel that lies on disk here; the package itself accepts torch>=2.11 (GPU boxes).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

data/sources/.ready: scripts/fetch_sources.py
	$(BIN)/python scripts/fetch_sources.py
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml

setup: $(VENV)/.installed data/sources/.ready $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance concurrency set gpu 1 >/dev/null 2>&1 || true

# Debian's Chromium drives the UI test (Playwright's own browser download cannot work offline).
browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: setup
	$(BIN)/plasma demo

test: setup browser-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

ui: setup
	$(BIN)/dagster dev -w workspace.yaml

bench: setup
	$(BIN)/pip install -q '.[bench]'
	$(BIN)/python benchmarks/clean_bench.py
	$(BIN)/python benchmarks/dedup_bench.py
