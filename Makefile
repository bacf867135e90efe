# `make demo` and `make test` work on a fresh machine with Python 3.11+:
# each creates .venv if needed and installs the pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
COMPOSE_SCHEMA := .cache/compose-schema/docker_compose-1.29.2-py2.py3-none-any.whl

.PHONY: demo test bench bench-audit bench-backlog install clean

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cancel247 needs Python 3.11 or newer; run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[dev,flower]"
	touch $(STAMP)

# The Compose specification's JSON schema, for tests/test_compose.py.
$(COMPOSE_SCHEMA): | $(BIN)/python
	$(BIN)/python -m pip download --quiet --no-deps --dest .cache/compose-schema docker-compose==1.29.2

demo: $(STAMP)
	$(BIN)/cancel247 demo

test: $(STAMP) $(COMPOSE_SCHEMA)
	$(BIN)/python -m pytest

# Each script measures one part and rewrites its own section of
# bench/RESULTS.md; add new scripts to this list. Needs Redis on
# 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432, as `make test` does.
BENCH_SCRIPTS := bench/pipeline.py

bench: $(STAMP)
	@for script in $(BENCH_SCRIPTS); do $(BIN)/python $$script || exit 1; done

# Longer runs, kept out of `make bench` and its ten minutes: the audit store
# filled with a year of history (about 7 minutes), and a backlog of 50,000
# requests drained by one worker.
bench-audit: $(STAMP)
	$(BIN)/python bench/audit.py

bench-backlog: $(STAMP)
	$(BIN)/python bench/backlog.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
