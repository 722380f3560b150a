# Quick start on a fresh Debian/Ubuntu machine:  make demo  |  make test
# Every target installs what it needs on first use (Debian packages, the .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/functions/infer:$(CURDIR)/functions/forecast:$(CURDIR)/functions/scale:$(CURDIR)
FUNCTION_PYPROJECTS := $(wildcard functions/*/pyproject.toml)

MODEL ?= models/wine.joblib
PORT ?= 8080

.PHONY: help demo test models serve bench-infer apt venv clean

help:
	@echo "make demo | test | models | serve MODEL=<artifact> PORT=<port> | bench-infer"

apt:
	@bash scripts/ensure-apt.sh redis-server:redis-server prometheus:prometheus promtool:prometheus

$(VENV)/.installed: requirements-dev.txt $(FUNCTION_PYPROJECTS) scripts/pyproject_deps.py
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || bash scripts/ensure-apt.sh _never_:python3-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt $$($(PYTHON) scripts/pyproject_deps.py $(FUNCTION_PYPROJECTS))
	touch $@

venv: $(VENV)/.installed

models/manifest.json: $(VENV)/.installed training/train_models.py
	$(PY) -m training.train_models --out models

models: models/manifest.json

serve: models
	$(PY) -m infer.serve --model $(MODEL) --port $(PORT)

demo: venv models
	$(PY) scripts/demo_infer.py

test: apt venv
	$(PY) -m pytest -q tests

bench-infer: venv models
	@bash scripts/ensure-apt.sh wrk:wrk
	$(PY) bench/bench_infer.py

clean:
	rm -rf $(VENV) models .pytest_cache .hypothesis
