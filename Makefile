# Baton — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench venv clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# `exec`: the signal that stops `make run` reaches baton serve itself, which exits 0 on it.
run: $(STAMP)
	exec $(VENV)/bin/baton serve --config examples/demo.toml $(RUN_ARGS)

system-deps:
	./scripts/install-system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples scripts conftest.py
	$(VENV)/bin/ruff format --check src tests bench examples scripts conftest.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
unit: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

test: $(STAMP) system-deps lint typecheck unit

# Every benchmark, short runs (each prints one JSON object last; docs/benchmarks.md has the
# full-run figures and how they were taken).
bench: $(STAMP) system-deps
	$(PY) bench/core.py --quick
	$(PY) bench/ptt.py --quick
	$(PY) bench/ptt.py --media --quick
	$(PY) bench/media.py --quick
	$(PY) bench/sip_cps.py --quick
	$(PY) bench/explore.py --quick
	$(PY) bench/flood.py --quick
	$(PY) bench/cluster.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
