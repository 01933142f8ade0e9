# Wukong's two entry points: `make run` and `make test` (`make help` lists every
# target). Both install what is missing first (scripts/setup.sh: apt packages,
# kernel headers, .venv, the etcd and kube-apiserver builds) and are safe to rerun.
VENV := .venv
BIN := $(VENV)/bin
PY_SOURCES := wukong tests bench docs

.PHONY: help setup run test lint unit integration bench down docs

## help: list the targets
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(MAKEFILE_LIST) | expand -t 14

## setup: install what is missing (Go checked first, apt packages, .venv with kubectl and helm, etcd + kube-apiserver)
setup:
	@bash scripts/setup.sh

## run: the demo: control plane, simulated infrastructure, operator, telemetry, sample VMs (Ctrl-C stops)
# foreground.py: Ctrl-C reaches the demo alone, so make adds no "Error 130" to its clean end.
run: setup
	@$(BIN)/python scripts/foreground.py $(BIN)/wukong demo

## test: lint, type-check, then every test (unit, integration against a real API server, ebpf as root)
test: setup lint
	$(BIN)/pytest

## docs: the API reference built from the docstrings into build/docs (warnings are errors; `make test` builds it too)
docs: setup
	$(BIN)/python -m sphinx -W --keep-going -E -q -b html docs/api build/docs
	@echo "the API reference: build/docs/index.html"

## lint: ruff and mypy --strict only
lint:
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

## unit: the tests that need no cluster
unit: setup
	$(BIN)/pytest tests/unit

## integration: the tests against a real API server
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
	$(BIN)/python bench/agent_attach_latency.py
	$(BIN)/python bench/agent_memory.py
	$(BIN)/python bench/tenant_fairness.py
	$(BIN)/python bench/sharding.py
	$(BIN)/python bench/report.py

## down: stop the dev cluster `wukong dev up` started
down:
	@$(BIN)/wukong dev down
