# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv when it is missing and install what they need; a stamp
# file makes the install step a no-op until pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test check lint typecheck install clean

demo: $(STAMP)
	$(BIN)/veil demo

test: check $(STAMP)
	$(BIN)/python -m pytest

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Veil needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@# pycanon checks k, l and t in the tests, independently of Veil. Its releases pin exact
	@# versions of numpy, typer and others that conflict with ours, while pycanon.anonymity
	@# needs only numpy and pandas: install it without its dependencies.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "pycanon==1.3.6"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache veil-demo
