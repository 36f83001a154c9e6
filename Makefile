# Two commands on a fresh Debian machine: `make demo` (a small real study) and `make test`.
# Both are idempotent: they install only what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test system venv ui bench-deps nam

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

test: system venv nam
	$(PY) -m pytest -q tests

ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

# neural-amp-modeler, whose loader the .nam export tests run and whose trainer the benchmarks run.
# Pinned: 0.12.x writes and reads the .nam format (version 0.5.x) that every NAM plugin loads, and
# names the standard/lite/feather/nano architectures our presets copy. --no-deps keeps our torch and
# lightning; of its requirements only wavio is imported on the paths we use (`pip check` lists the
# others, librosa, sounddevice, tensorboard, transformers and a pytorch_lightning pin, as unmet).
NAM_STAMP := $(VENV)/.nam-0.12.3
$(NAM_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps neural-amp-modeler==0.12.3 wavio==0.0.9
	touch $(NAM_STAMP)

nam: $(NAM_STAMP)

bench-deps: nam  ## neural-amp-modeler for benchmarks/model_speed.py and benchmarks/nam_vs_ours.py
