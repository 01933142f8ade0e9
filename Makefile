# Wukong's two entry points: `make run` and `make test`. Both install what is
# missing first (scripts/setup.sh: apt packages, kernel headers, .venv, the
# kube-apiserver build) and are safe to rerun.
VENV := .venv
BIN := $(VENV)/bin
PY_SOURCES := wukong tests bench docs

.PHONY: setup run test lint unit integration bench down docs

setup:
	@bash scripts/setup.sh

## run: the demo: control plane, simulated infrastructure, operator, telemetry, sample VMs (Ctrl-C stops)
run: setup
	$(BIN)/wukong demo

## test: lint, type-check, then every test (unit, integration against a real API server, ebpf as root)
test: setup lint
	$(BIN)/pytest

## docs: the API reference built from the docstrings into build/docs (warnings are errors; `make test` builds it too)
docs: setup
	$(BIN)/python -m sphinx -W --keep-going -E -q -b html docs/api build/docs
	@echo "the API reference: build/docs/index.html"

lint:
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest -m integration

## bench: benchmarks that print ratios against a peer measured in the same run; writes bench/RESULTS.md
bench: setup
	rm -rf bench/.results
	$(BIN)/python bench/reconcile_throughput.py
	$(BIN)/python bench/compare_peers.py
	$(BIN)/python bench/requeue_profile.py
	$(BIN)/python bench/reconcile_capacity.py
	$(BIN)/python bench/cache_scale.py
	$(BIN)/python bench/telemetry_overhead.py
	$(BIN)/python bench/agent_overhead.py
	$(BIN)/python bench/agent_program_profile.py
	$(BIN)/python bench/tenant_fairness.py
	$(BIN)/python bench/report.py

down:
	@$(BIN)/wukong dev down
