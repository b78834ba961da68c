# Quick start: `make demo` and `make test`; each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m pescador.demo

test: $(VENV)/.test-installed
	$(PY) -m pytest pescador tests README.md

$(VENV)/.docs-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(VENV)/.demo-installed
	$(PY) -m benchmarks all

clean:
	rm -rf $(VENV) build docs/_build *.egg-info .pytest_cache .hypothesis
