# The two commands a newcomer runs (see README): `make dev` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# func's environment for the functions (func-python, cloudevents 2.x, the functions'
# pyproject dependencies): the tests run each function through it too.
FUNC_VENV  ?= .venv-func
FUNC_STAMP  = $(FUNC_VENV)/.installed

.PHONY: dev test test-cluster cluster lint vendor bench clean dist

# The real-cluster suite (tests/cluster) needs kube-apiserver, etcd, kubectl and Knative's
# adapter, and Knative's func CLI, built from Go modules into .cluster/bin;
# without Go they are left out.
CLUSTER_TESTS := $(if $(shell command -v go),,--ignore=tests/cluster)

$(STAMP): requirements.txt functions/*/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(FUNC_STAMP): $(STAMP) functions/*/pyproject.toml functions/*/requirements.txt dev/func_env.py
	$(PYTHON) -m venv $(FUNC_VENV)
	$(PY) dev/func_env.py > $(FUNC_VENV)/requirements.txt
	$(FUNC_VENV)/bin/python -m pip install --quiet -r $(FUNC_VENV)/requirements.txt
	# What `func run --builder host` installs (offline, from here, in the tests): the same
	# pins, and the build backends of the function (setuptools) and of func's service
	# project (hatchling).
	rm -rf $(FUNC_VENV)/wheels
	$(FUNC_VENV)/bin/python -m pip download --quiet --dest $(FUNC_VENV)/wheels \
	  -r $(FUNC_VENV)/requirements.txt setuptools==84.2.1 hatchling==1.33.0 wheel==0.48.0
	# What `make dist` packs for an air-gapped image build: each function's own pins.
	for r in functions/*/requirements.txt; do \
	  $(FUNC_VENV)/bin/python -m pip download --quiet --only-binary=:all: \
	    --dest $(FUNC_VENV)/wheels -r $$r || exit 1; done
	touch $(FUNC_STAMP)

## Run the whole chain locally on this machine (Ctrl-C stops it).
## `make dev DEV_ARGS="--kube cluster"`: on a real kube-apiserver with Knative's adapter.
dev: $(STAMP)
	$(PY) -m dev.stack $(DEV_ARGS)

## Lint, check vendored copies, run every test (the real-cluster ones too when Go is here).
test: $(STAMP) $(FUNC_STAMP)
	$(PY) -m ruff check .
	$(PY) dev/vendor.py --check
	bash dev/cluster/build.sh --if-go
	$(PY) -m pytest $(CLUSTER_TESTS)

## Only the real-cluster tests (builds .cluster/bin first; needs Go).
test-cluster: $(STAMP) $(FUNC_STAMP)
	bash dev/cluster/build.sh
	$(PY) -m pytest tests/cluster

## A real control plane to use by hand (Ctrl-C stops it).
cluster: $(STAMP)
	$(PY) -m dev.cluster

lint: $(STAMP)
	$(PY) -m ruff check .

## Copy shared/ into each function and refresh each func.yaml from the defaults.
vendor: $(STAMP)
	$(PY) dev/vendor.py

## The offline package in dist/ (README "Offline package"):
## `make dist REGISTRY=registry.local/kubeevent TAG=1.4.0 [OFFLINE=1]`.
dist: $(STAMP) $(FUNC_STAMP)
	$(PY) dev/dist.py --registry "$(REGISTRY)" --tag "$(TAG)" $(if $(OFFLINE),--offline)

## Benchmarks (on demand, not in CI).
bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(FUNC_VENV) .pytest_cache .ruff_cache
