# Two commands on a fresh Debian machine: `make demo` (a small real study) and `make test`.
# Both are idempotent: they install only what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test system venv ui bench-deps nam

# chromium: the MLflow UI test drives Debian's browser through Playwright (no browser download).
system:  ## Debian packages: ngspice (SPICE), PostgreSQL (multi-worker study tests), chromium (UI test)
	@command -v ngspice >/dev/null && command -v pg_ctlcluster >/dev/null && test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ngspice postgresql chromium >/dev/null; }

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # CPU wheel; a bare `torch` would pull a multi-GB CUDA build
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The demo: SPICE data at two knob settings, a small study (studies/demo.toml), the best model
# tested and registered, then a guitar riff played through it at both settings (mlruns/demo/*.wav).
DEMO := $(VENV)/bin/ampstudy
demo: system venv  ## a small real study whose champion sounds like the amp, and a riff played through it
	$(DEMO) study run studies/demo.toml
	$(DEMO) promote studies/demo.toml
	$(DEMO) riff mlruns/demo/riff_di.wav --seconds 8 --sample-rate 16000
	$(DEMO) render models:/bassman-demo@champion mlruns/demo/riff_di.wav mlruns/demo/riff_clean.wav \
	  --volume 0.4 --treble 0.6 --bass 0.5 --middle 0.5
	$(DEMO) render models:/bassman-demo@champion mlruns/demo/riff_di.wav mlruns/demo/riff_crunch.wav \
	  --volume 0.8 --treble 0.7 --bass 0.4 --middle 0.6
	$(DEMO) study report studies/demo.toml
	@echo "Listen: mlruns/demo/riff_di.wav (the DI), riff_clean.wav and riff_crunch.wav (the champion at two settings)"
	@echo "Browse: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000"
	@echo "  then open the link above (the demo's trials, best first)"

test: system venv nam
	$(PY) -m pytest -q -n 2 tests  # two processes: the suite waits on servers and subprocesses a lot

ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000

# neural-amp-modeler, whose loaders the .nam export tests run and whose trainer the benchmarks run.
# 0.13.0 in the venv: it writes and reads the .nam format 0.7 (what `ampstudy export` writes by
# default; NeuralAmpModelerCore >= 0.4.1 plays it) and trains A2. 0.12.3 beside it, in its own folder
# (.venv/nam-0.12.3, put on sys.path only where asked: tests/nam_0_12.py): it reads the format 0.5
# that older plugins play (`export --nam-format 0.5`) and its trainer names the A1 architectures
# (standard/lite/feather/nano) our presets copy and benchmarks/peer_race.py trains. --no-deps
# keeps our torch and lightning; of 0.13's requirements only librosa (with lazy_loader) is imported
# on the paths we use, wavio for 0.12.3 (`pip check` lists sounddevice, tensorboard, transformers and
# a pytorch_lightning pin as unmet).
NAM_STAMP := $(VENV)/.nam-0.13.0
$(NAM_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps neural-amp-modeler==0.13.0 librosa==0.11.0 lazy_loader==0.6 wavio==0.0.9
	rm -rf $(VENV)/nam-0.12.3 && $(PY) -m pip install -q --no-deps --target $(VENV)/nam-0.12.3 neural-amp-modeler==0.12.3
	touch $(NAM_STAMP)

nam: $(NAM_STAMP)

bench-deps: nam  ## neural-amp-modeler for benchmarks/model_speed.py and benchmarks/peer_race.py
