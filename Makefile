# Quick start: `make demo` and `make test`; each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-frameworks bench bench-peers docs docs-check clean

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
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,torch,torchdata,keras,ray]'
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m pescador demo

# Two pytest-xdist workers: most of the slow tests wait on processes (workers, kernels, a Ray cluster),
# not on the CPU, so two of them fit a 2-core machine.  --dist loadfile keeps each test file on one
# worker, so a module's shared setup (a Jupyter kernel, a Ray cluster, one subprocess whose results
# several tests read) is made once.  A test that counts the processes of its process group runs in a
# session of its own (the other worker's processes share the group).  `pytest` alone runs the suite in
# one process.
test: $(VENV)/.test-installed
	KERAS_BACKEND=torch $(PY) -m pytest -n 2 --dist loadfile pescador tests docs README.md

# The PyTorch and Keras tests alone (where the frameworks are absent, as in a
# venv made by hand with only '.[test]', `pytest` skips them, saying why).
test-frameworks: $(VENV)/.test-installed
	KERAS_BACKEND=torch $(PY) -m pytest tests/test_frameworks.py tests/test_docs.py pescador/torch.py

$(VENV)/.docs-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Builds the docs, then renders every page in headless Chromium at 1280 px
# and at 390 px and fails on a code block cut off without a scroll bar, a
# missing or blurry image, a page that scrolls sideways, or navigation out
# of reach; screenshots go to docs/_build/screens/ (docs/check_rendering.py).
# Chromium comes from the system's packages: installed here when missing
# and this runs as root with apt-get.
CHROMIUM := $(firstword $(shell command -v chromium chromium-browser google-chrome 2>/dev/null))
docs-check: docs
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "make docs-check needs Chromium: install it (Debian, Ubuntu: sudo apt-get install chromium)"; exit 1; \
	fi
endif
	$(PY) docs/check_rendering.py --no-build

bench: $(VENV)/.demo-installed
	$(PY) -m benchmarks all

# Our pipeline beside PyTorch's DataLoader and pescador 3.0 (benchmarks/bench_peers.py).
# pescador 3.0 goes into a venv of its own under build/ (ignored by git): our
# package and 3.0 never share a venv; its figures come back as JSON.
PEERS_VENV := build/peers-venv
$(PEERS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet 'pescador==3.0.0' numpy pyzmq
	touch $@

bench-peers: $(VENV)/.test-installed $(PEERS_VENV)/.installed
	$(PY) -m benchmarks peers

clean:
	rm -rf $(VENV) build docs/_build *.egg-info .pytest_cache .hypothesis
