# Two commands do everything on a fresh machine (Python >= 3.10 with pip and venv):
#   make demo   build the embedded demo feature cache and train LOFF-TA on it
#   make test   run the whole test suite
# Both create the virtual environment .venv the first time.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# pytest-xdist: 4 worker processes even on 2 cores, because many tests wait (servers, worker
# start-up, retries) rather than compute; each worker runs its own session servers
# (tests/conftest.py). --durations=15 prints the slowest tests of every run.
PYTEST_XDIST ?= -n 4 --dist loadgroup

.PHONY: demo test test-fast coverage lint bench gpu-check gpu-dry-run clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python recipes/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_XDIST) --durations=15 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_XDIST) -m "not slow" $(PYTEST_ARGS)

# line and branch coverage of loffdata/ in every process ([tool.coverage] in pyproject.toml);
# slower than `make test` (not part of CI); the report's last line is the total
coverage: $(STAMP)
	rm -rf .coverage-data && mkdir -p .coverage-data
	COVERAGE_FILE=$(CURDIR)/.coverage-data/.coverage \
	  $(BIN)/python -m coverage run -m pytest -q -n 2 -p no:cacheprovider $(PYTEST_ARGS)
	COVERAGE_FILE=$(CURDIR)/.coverage-data/.coverage $(BIN)/python -m coverage combine -q
	COVERAGE_FILE=$(CURDIR)/.coverage-data/.coverage $(BIN)/python -m coverage report | tail -1

# ruff, then the import contracts of pyproject.toml [tool.importlinter] (layers, no circles,
# a core without the extras' packages), then the size limits (no module over 400 lines, no
# function over 40), then whether AugmentSpec's field block matches the op registry; see
# docs/architecture.md.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python tools/check_sizes.py loffdata benchmarks recipes tools
	$(BIN)/python tools/spec_fields.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_loader.py

# on a CUDA machine: every GPU check and figure in one run (<= 8 min on one H100/H200),
# written to docs/benchmarks-gpu.md and docs/benchmarks-gpu.json; elsewhere one line, exit 0
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

# The device runbook (benchmarks/device/README.md) rehearsed here, offline, on the CUDA
# stand-in; heavy (downloads the 198 MB DALI wheel), so not part of `make test`.
gpu-dry-run: $(STAMP)
	HOST_PY=$(BIN)/python bash benchmarks/device/dry_run.sh

clean:
	rm -rf $(VENV) out demo_out .pytest_cache .coverage-data
