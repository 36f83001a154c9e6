# Two commands on a fresh Debian machine: `make demo` (a small real study) and `make test`.
# Both are idempotent: they install only what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test system venv ui bench-deps

system:  ## Debian packages: ngspice (SPICE) and PostgreSQL (multi-worker study tests)
	@command -v ngspice >/dev/null && command -v pg_ctlcluster >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ngspice postgresql >/dev/null; }

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # CPU wheel; a bare `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: system venv  ## generate SPICE data, run the tiny study, promote the best model to the registry
	$(VENV)/bin/ampstudy study run studies/tiny.toml
	$(VENV)/bin/ampstudy study report studies/tiny.toml
	$(VENV)/bin/ampstudy promote studies/tiny.toml
	@echo "Browse: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db"

test: system venv
	$(PY) -m pytest -q tests

ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

bench-deps: venv  ## neural-amp-modeler for benchmarks/model_speed.py, without touching torch
	$(PY) -m pip install -q --no-deps neural-amp-modeler && $(PY) -m pip install -q librosa wavio
