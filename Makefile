# The two set-up commands of the README: `make test` and `make demo`. Both create .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0

.PHONY: test proof demo demo-check lint venv bench clean

venv: $(STAMP)

# Where no NVIDIA GPU is present, install the CPU build of torch first so that the looser `torch>=2.3`
# of pyproject.toml is already satisfied (otherwise pip downloads a multi-GB CUDA build).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install -q $(TORCH_CPU); fi
	$(BIN)/python -m pip install -q -e ".[dev,ref,onnx]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check autoias_pl tests benchmarks

test: $(STAMP)
	$(BIN)/ruff check autoias_pl tests benchmarks
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest

# The whole-space planted proof (tests/test_search_proof.py, ~3 min at one thread): a search of 100k planted rows
# must rank the planted pairs first and give them product. CI runs it beside `make test`.
proof: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -m proof tests/test_search_proof.py

demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m autoias_pl.experiments.demo --out runs/demo

# CI: a fresh demo must print the README's table (every figure but the seconds): the README cannot go stale.
demo-check: $(STAMP)
	rm -rf runs/ci-demo
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m autoias_pl.experiments.demo --out runs/ci-demo
	$(BIN)/python benchmarks/sync_readme.py --verify runs/ci-demo/results.md

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. $(BIN)/python $$b; done

clean:
	rm -rf runs lightning_logs .pytest_cache
