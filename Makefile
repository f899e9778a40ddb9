# The README's commands. `make demo` and `make test` work from a fresh clone with Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint browser clean bench

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/nthlayer demo

browser:
	@scripts/ensure-chromium

test: $(INSTALLED) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Snapshot benchmarks against the sandbox (about 5 minutes; `make bench ARGS=--quick` for 100 and 1,000 teams).
bench: $(INSTALLED)
	$(BIN)/python -m bench $(ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .dagster_home test-artifacts .pytest_cache
