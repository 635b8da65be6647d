# The two commands a newcomer runs (see README): `make dev` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: dev test lint vendor bench clean

$(STAMP): requirements.txt functions/*/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## Run the whole chain locally on this machine (Ctrl-C stops it).
dev: $(STAMP)
	$(PY) -m tests.devstack

## Lint, check vendored copies, run every test.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) tests/tools/vendor.py --check
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

## Copy shared/ into each function and refresh each func.yaml from the defaults.
vendor: $(STAMP)
	$(PY) tests/tools/vendor.py

## Benchmarks (on demand, not in CI).
bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
