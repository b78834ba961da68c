# Quick start: `make demo` and `make test`; each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-frameworks bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# The test extras include PyTorch (CPU build) and Keras 3, so that the
# framework tests run too: they add about a minute of installing, and the
# whole of `make test` stays well under five minutes.  The extras state the
# supported ranges; constraints.txt pins the exact releases the tests use.
$(VENV)/.test-installed: pyproject.toml constraints.txt Makefile | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,torch,keras,ray]'
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m pescador demo

test: $(VENV)/.test-installed
	KERAS_BACKEND=torch $(PY) -m pytest pescador tests docs README.md

# The PyTorch and Keras tests alone (where the frameworks are absent, as in a
# venv made by hand with only '.[test]', `pytest` skips them, saying why).
test-frameworks: $(VENV)/.test-installed
	KERAS_BACKEND=torch $(PY) -m pytest tests/test_frameworks.py tests/test_docs.py pescador/torch.py

$(VENV)/.docs-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(VENV)/.demo-installed
	$(PY) -m benchmarks all

clean:
	rm -rf $(VENV) build docs/_build *.egg-info .pytest_cache .hypothesis
