# Targets named in the README. Every target creates the virtual environment first (idempotent: a stamp
# file makes a second run a no-op unless pyproject.toml changed).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test run bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# The main job: LeNet ANN with the SLAC head on scikit-learn's embedded digits (1-2 minutes on 2 cores).
# Outputs go to runs/lenet_ann_slac_digits_seed0 (replaced on every `make run`).
run: setup
	$(BIN)/slac train --overwrite

bench: setup
	$(BIN)/slac bench adder

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build .pytest_cache
