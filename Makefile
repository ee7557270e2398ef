# Targets named in the README. Every target creates the virtual environment first (idempotent: a stamp
# file makes a second run a no-op unless pyproject.toml or the pins changed).
#
# Installs are pinned: requirements/constraints.txt holds the exact version of every package of the dev
# environment (torch stays the 2.13.0 CPU build), so that a new release of numba, Triton, pytest or ruff
# cannot change CI without a commit. `make lock` re-resolves the open ranges of pyproject.toml in a fresh
# environment and rewrites the file; `make setup CONSTRAINTS=` installs without the pins (a CUDA build of
# torch on a GPU machine: `make setup TORCH_SPEC="torch==X" CONSTRAINTS=`, its Triton differs). Users of
# `pip install slac` get the open ranges of pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS ?= requirements/constraints.txt
PINNED := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
PYTEST_ARGS ?=
LOCK_VENV := build/lock-venv

.PHONY: setup test run bench lint format lock check-pins clean

setup: $(STAMP)

# setuptools comes from the pins too: the editable install builds without isolation, so that its build
# backend is the pinned one and not whatever release is newest.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PINNED) --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet $(PINNED) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(PINNED) --no-build-isolation -e ".[dev]"
	$(if $(CONSTRAINTS),$(BIN)/python scripts/check_pins.py $(CONSTRAINTS))
	touch $(STAMP)

# Two pytest workers share the cores, each with its own OpenMP team (torch's, which numba's kernels join):
# GNU OpenMP's default spin-waiting makes one worker's idle threads take the other's core; passive waiting
# gives it back (BENCHMARKS.md, "Figures behind design choices in the GPU kernels and distributed training").
test: setup
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# The main job: LeNet ANN with the SLAC head on scikit-learn's embedded digits (1-2 minutes on 2 cores).
# Outputs go to runs/lenet_ann_slac_digits_seed0 (replaced on every `make run`).
run: setup
	$(BIN)/slac train --overwrite

bench: setup
	$(BIN)/slac bench adder

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts tools
	$(BIN)/ruff format --check src tests benchmarks scripts tools

format: setup
	$(BIN)/ruff format src tests benchmarks scripts tools
	$(BIN)/ruff check --fix src tests benchmarks scripts tools

# Re-resolve the dev environment from pyproject.toml's ranges (newest releases the registries hold) in a
# fresh virtual environment, and write its exact versions to $(CONSTRAINTS). Review the diff, run
# `make test`, commit both.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[dev]"
	$(LOCK_VENV)/bin/python scripts/check_pins.py --write requirements/constraints.txt
	rm -rf $(LOCK_VENV)

check-pins: setup
	$(BIN)/python scripts/check_pins.py $(CONSTRAINTS)

clean:
	rm -rf $(VENV) build .pytest_cache
