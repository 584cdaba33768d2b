# InternVL 的部署与微调 — course commands.
#
#   make course   set up whatever is missing, then run every notebook in order (executed copies -> artifacts/executed/)
#   make test     set up whatever is missing, then run the unit tests in both environments and the notebooks under nbval
#   make setup    the shared first half: both environments, Jupyter kernels, the tiny model, the synthetic data
#
# Everything is idempotent: a target only rebuilds what is missing or out of date.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV_X := .venv-xtuner
VENV_L := .venv-lmdeploy
PY_X := $(VENV_X)/bin/python
PY_L := $(VENV_L)/bin/python
ART := artifacts
TINY := $(ART)/models/internvl2-tiny
SYNTH := $(ART)/data/foodieqa-synth
LLAVA := $(ART)/data/llava-synth
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
PYTEST_ARGS ?=
NBVAL_TIMEOUT ?= 1800
# No model hub exists in this course's world; make any accidental hub call fail fast instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help setup system envs kernels tiny replica data course test test-unit test-notebooks lab webui refresh-notebooks wheelhouse clean

help:
	@echo "make course   set up what is missing, run all notebooks in order (executed copies in $(ART)/executed)"
	@echo "make test     set up what is missing, run unit tests (both envs) and notebooks under nbval"
	@echo "make setup    environments + Jupyter kernels + tiny model + synthetic data"
	@echo "make lab      JupyterLab on 127.0.0.1:8888"
	@echo "make webui    the Gradio web UI on 127.0.0.1:7860 (base model)"
	@echo "make wheelhouse PY=3.12 PLATFORM=manylinux_2_28_x86_64   wheels for an air-gapped GPU server"

setup: system envs kernels tiny replica data

# A CJK font for the Chinese labels in plots, headless Chromium for the browser test (Debian packages).
# Best effort: without root/sudo the course still runs (plots show boxes for Chinese, the browser test skips).
system:
	bash scripts/install_system_deps.sh || echo "warning: could not install the Debian packages (see scripts/install_system_deps.sh)"

# ---- environments ---------------------------------------------------------------------------
# Both environments install independently, so `make -j2 envs` builds them side by side.
envs: $(VENV_X)/.installed $(VENV_L)/.installed

$(VENV_X)/.installed: requirements-xtuner.txt pyproject.toml
	test -x $(PY_X) || $(PYTHON) -m venv $(VENV_X)
	$(PY_X) -m pip install --upgrade --quiet pip
	$(PY_X) -m pip install --quiet -r requirements-xtuner.txt
	$(PY_X) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV_L)/.installed: requirements-lmdeploy.txt pyproject.toml
	test -x $(PY_L) || $(PYTHON) -m venv $(VENV_L)
	$(PY_L) -m pip install --upgrade --quiet pip
	$(PY_L) -m pip install --quiet -r requirements-lmdeploy.txt
	$(PY_L) -m pip install --quiet --no-deps -e .
	touch $@

# Each notebook names its kernel in its metadata; nbval and JupyterLab find them here.
# Both kernels go into both environments' own prefix (not ~/.local): Jupyter started from either venv sees
# both, and two clones of the course never point each other's kernels at the wrong interpreter.
kernels: envs
	for v in $(VENV_X) $(VENV_L); do \
	  $(PY_X) -m ipykernel install --prefix $$v --name internvl-xtuner --display-name "InternVL (xtuner env)" >/dev/null 2>&1 && \
	  $(PY_L) -m ipykernel install --prefix $$v --name internvl-lmdeploy --display-name "InternVL (lmdeploy env)" >/dev/null 2>&1 || exit 1; \
	done
	@$(PY_X) scripts/stale_kernels.py internvl-xtuner internvl-lmdeploy

# ---- embedded default: tiny model + synthetic data --------------------------------------------
tiny: $(TINY)/config.json
$(TINY)/config.json: $(VENV_L)/.installed $(wildcard helpers/internvl/*.py) helpers/models.py
	$(PY_L) -m helpers.models build-tiny --out $(TINY) --force

# The published InternVL2-2B layout (OpenGVLab's file set, InternLM2's sentencepiece tokenizer) at tiny sizes:
# what the tests run every course path on, besides the tiny build.
REPLICA := $(ART)/models/internvl2-2b-replica-tiny
replica: $(REPLICA)/replica_build.json
$(REPLICA)/replica_build.json: $(VENV_L)/.installed helpers/replica.py $(wildcard helpers/internvl/*.py)
	$(PY_L) -m helpers.replica --out $(REPLICA) --force

data: $(LLAVA)/train.json
$(SYNTH)/sivqa_tidy.json: $(VENV_L)/.installed helpers/data/synth.py helpers/foods.py
	$(PY_L) -m helpers.data.synth --out $(SYNTH)
$(LLAVA)/train.json: $(SYNTH)/sivqa_tidy.json helpers/data/llava.py
	$(PY_L) -m helpers.data convert --sivqa $(SYNTH)/sivqa_tidy.json --images $(SYNTH) --out $(LLAVA)

# ---- running the course ---------------------------------------------------------------------
course: setup
	# notebook i/N, cell j/M and the elapsed time in the terminal while it runs
	$(VENV_L)/bin/python scripts/run_notebooks.py --out $(ART)/executed --timeout $(NBVAL_TIMEOUT) $(NOTEBOOKS)
	@echo "executed notebooks: $(ART)/executed/"

# Maintainers: re-execute the notebooks in place on the CPU profile, so the committed outputs are current.
refresh-notebooks: setup
	for nb in $(NOTEBOOKS); do \
	  $(VENV_L)/bin/jupyter nbconvert --to notebook --execute --inplace "$$nb" --ExecutePreprocessor.timeout=$(NBVAL_TIMEOUT); \
	done

lab: setup
	$(VENV_L)/bin/jupyter lab --ip 127.0.0.1 --port 8888 --no-browser notebooks/

webui: setup
	$(PY_L) -m helpers.serve.webui

# ---- tests ----------------------------------------------------------------------------------
test: setup test-unit test-notebooks

# The same tests/ run in both environments; each test skips (with its reason) what its environment lacks.
test-unit:
	$(PY_X) -m pytest tests -m "not gpu" $(PYTEST_ARGS)
	$(PY_L) -m pytest tests -m "not gpu" $(PYTEST_ARGS)

test-notebooks:
	@if [ -z "$(NOTEBOOKS)" ]; then echo "no notebooks yet"; exit 0; fi
	$(PY_L) -m pytest --nbval-lax --nbval-cell-timeout=$(NBVAL_TIMEOUT) -p no:cacheprovider $(NOTEBOOKS) $(PYTEST_ARGS)

# ---- air-gapped GPU servers -----------------------------------------------------------------
PY ?= 3.12
PLATFORM ?= manylinux_2_28_x86_64
wheelhouse:
	bash scripts/wheelhouse.sh download --python $(PY) --platform $(PLATFORM) --out wheelhouse

clean:
	rm -rf $(ART)/executed $(ART)/runs .pytest_cache
