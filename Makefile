# Wukong's two entry points: `make run` and `make test`. Both install what is
# missing first (scripts/setup.sh: apt packages, kernel headers, .venv, the
# kube-apiserver build) and are safe to rerun.
VENV := .venv
BIN := $(VENV)/bin
PY_SOURCES := wukong tests bench

.PHONY: setup run test lint unit integration bench down

setup:
	@bash scripts/setup.sh

## run: start the local control plane (the operator joins it once it exists)
run: setup
	@$(BIN)/wukong dev up
	@echo
	@echo "The local control plane is up. The Wukong operator is not built yet, so"
	@echo "nothing reconciles; use the cluster with:"
	@echo '  kubectl --kubeconfig "$$($(BIN)/wukong dev kubeconfig)" get ns'
	@echo "Stop it with: $(BIN)/wukong dev down"

## test: lint, type-check, then every test (unit, integration against a real API server, ebpf as root)
test: setup lint
	$(BIN)/pytest

lint:
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest -m integration

## bench: benchmarks that print ratios against a peer measured in the same run
bench: setup
	$(BIN)/python bench/reconcile_throughput.py
	$(BIN)/python bench/tracing_overhead.py

down:
	@$(BIN)/wukong dev down
