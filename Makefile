# siplab developer entry points. `make test` is what CI runs (see .ci/run).
#
#   make setup   .venv with siplab[dev,lab] editable + Kamailio/SIPp if possible
#   make test    full pytest suite (real loopback tests skip without Kamailio/SIPp)
#   make lint    ruff + mypy
#   make demo    capacity report -> reports/capacity.html
#   make bench   twin benchmarks
#   make mutation  mutation testing of the twin's core and lab.erlang/lab.emodel (docs/mutation.md)
#   make nightly regression suite -> reports/nightly/<date>/ (ARGS=--quick; docs/nightly.md)
#   make lab     JupyterLab on notebooks/
#   make clean   run outputs, caches and build artefacts (keeps .venv)

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp

.DEFAULT_GOAL := test
.PHONY: setup demo test lint bench lab clean mutation nightly

setup: $(STAMP)

# Re-run only when the dependency declaration or the system installer changes.
$(STAMP): pyproject.toml scripts/install-system.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,lab]'
	bash scripts/install-system.sh
	@touch $(STAMP)

demo: setup
	$(BIN)/siplab report capacity

test: setup
	$(BIN)/python -m pytest -q tests/

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/bench_twin.py
	$(BIN)/python bench/bench_media.py
	$(BIN)/python bench/bench_agent.py

# Incremental: verdicts are kept in mutants/ (git-ignored); `make mutation ARGS=--fresh`
# starts anew, ARGS=--report only prints the stored verdicts. One worker (2 shared cores).
mutation: setup
	$(BIN)/python scripts/mutation.py $(ARGS)

# Exit 3 when a metric regressed against reports/baselines/ (docs/nightly.md).
nightly: setup
	$(BIN)/siplab nightly lab/suites/nightly.yaml $(ARGS)

lab: setup
	cd notebooks && ../$(BIN)/jupyter lab

clean:
	rm -rf runs/ build/ dist/ *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis mutants/
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) \
		-type d -print -exec rm -rf {} +
