# The set-up commands of the README: `make demo`, `make test` and `make test-fast`.
# All create .venv when it is missing and install what they need; a stamp
# file makes the install step a no-op until pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

# pytest-xdist workers: one per core by default (`make test WORKERS=4` to try more).
WORKERS ?= auto
PYTEST  := $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup

.PHONY: demo test test-fast check lint typecheck install browser java clean

demo: $(STAMP)
	$(BIN)/veil demo

# The whole suite, slow tests included (what CI runs), with the 25 slowest tests listed.
test: check $(STAMP)
	$(PYTEST) --durations=25

# The fast tier while working: everything not marked slow, no lint or type check.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

install: $(STAMP)

# Debian's Chromium for the console's browser tests (apt, when it is missing and apt can; they
# skip, saying so, without it). Playwright drives it: never `playwright install`.
browser:
	@.ci/install-chromium

# A Java runtime for Spark's local mode (tests/dp/test_spark_*): apt, only when java is missing.
java:
	@.ci/install-java

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
