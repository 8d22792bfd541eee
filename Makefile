# Two commands on a fresh machine (each installs what it needs into .venv on first use):
#   make train   - pretrain I-JEPA on the embedded digits (CPU, ~10 min) and print the probe table
#   make test    - run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: train test bench lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/jepalab train $(ARGS)

test: lint
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py $(ARGS)

# habits checked before the tests: lint, formatting, and the import contract (docs/architecture.md)
lint: $(STAMP)
	$(BIN)/ruff check src tests scripts notebooks
	$(BIN)/ruff format --check src tests scripts notebooks
	$(BIN)/python -m pytest -q tests/test_layers.py

clean:
	rm -rf $(VENV) runs outputs multirun
