# The README's commands. `make demo` and `make test` work from a fresh clone with Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# uv installs exactly what uv.lock pins (every package, with hashes); this is the uv that reads it.
UV_VERSION := 0.13.8
UV := $(BIN)/uv
# --locked: fail, never re-resolve, when pyproject.toml and uv.lock disagree (run `make lock`).
# --inexact: leave pip and uv itself in the virtualenv; a fresh clone's virtualenv holds nothing else.
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --inexact --extra test --extra demo --extra deploy

.PHONY: demo test lint browser clean bench lock settings-table

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

$(INSTALLED): pyproject.toml uv.lock | $(UV)
	$(SYNC)
	touch $(INSTALLED)

# After editing the dependencies in pyproject.toml: re-resolve what changed and install it.
# `make lock ARGS="--upgrade-package NAME"` bumps one package, `ARGS=--upgrade` all of them.
lock: | $(UV)
	$(UV) lock $(ARGS)
	$(SYNC)
	touch $(INSTALLED)

# `make demo ARGS="--port 3001 --sandbox-port 8788"` when 3000 or 8787 is taken.
demo: $(INSTALLED)
	$(BIN)/nthlayer demo $(ARGS)

browser:
	@scripts/ensure-chromium

# lint-imports: the import contracts in pyproject.toml. dg check defs: the code location loads as the
# webserver loads it (VIRTUAL_ENV tells dg which environment is the project's).
test: $(INSTALLED) browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg check defs
	$(BIN)/python -m pytest

# Snapshot benchmarks against the sandbox, minutes long (`make bench ARGS=--quick` for 100 and 1,000 teams);
# the first line of bench/results/latest.md says how long the run took.
bench: $(INSTALLED)
	$(BIN)/python -m bench $(ARGS)

# The README's table of environment variables, rendered from the settings model (resources/settings/).
settings-table: $(INSTALLED)
	$(BIN)/python -m nthlayer_pipelines.resources.settings --readme README.md

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .dagster_home test-artifacts .pytest_cache
