# Quick start on a fresh Debian/Ubuntu machine:  make demo  |  make test
# Every target installs what it needs on first use (Debian packages, the .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/functions/infer:$(CURDIR)/functions/forecast:$(CURDIR)/functions/scale:$(CURDIR)/functions/deadletter:$(CURDIR)
FUNCTION_PYPROJECTS := $(wildcard functions/*/pyproject.toml)

MODEL ?= models/wine.onnx
PORT ?= 8080
SHARED_TRACES := $(filter-out $(wildcard ../shared/traces/*fleet*.csv),$(wildcard ../shared/traces/*.csv))
TRACE ?=
FORMAT ?= table
COLD_START_S ?= 5
CAPACITY_RPS ?= 10
FIT_ON ?= fleet+trace

.PHONY: whatif help chaos demo demo-infer test models run-forecast run-scale serve bench-infer bench-forecaster bench-forecast bench-scale backtest backtest-fleet apt venv clean

help:
	@echo "make demo | demo-fleet | test | vendor | typecheck | models | serve MODEL=<artifact> PORT=<port> | serve-pool PORT=<port> | bench-infer | bench-pool | backtest [TRACE=<csv>] [FORMAT=json] | backtest-fleet [FLEET=<csv>] | whatif PROMETHEUS_URL=<url> | verify-cluster [REDIS_URL=..] [PROMETHEUS_URL=..] [INGRESS_URL=..] [POOL=1] | chaos | docs | bench-wsgi | bench-prometheus-clients"

# kubectl renders the kustomizations in the manifest tests (`kubectl kustomize`): the machine's own
# where it has one, else Debian's kubernetes-client (its kustomize reads our resources/namespace fields).
apt:
	@bash scripts/ensure-apt.sh redis-server:redis-server prometheus:prometheus promtool:prometheus kubectl:kubernetes-client

$(VENV)/.installed: requirements-dev.txt $(FUNCTION_PYPROJECTS) scripts/pyproject_deps.py
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || bash scripts/ensure-apt.sh _never_:python3-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt $$($(PYTHON) scripts/pyproject_deps.py $(FUNCTION_PYPROJECTS))
	touch $@

venv: $(VENV)/.installed

models/manifest.json: $(VENV)/.installed training/train_models.py training/publish_model.py
	$(PY) -m training.train_models --out models

models/forecaster/manifest.json: $(VENV)/.installed training/publish_forecaster.py training/synthetic_traces.py functions/forecast/forecast/forecaster.py functions/forecast/forecast/features.py
	$(PY) -m training.publish_forecaster --out models/forecaster

models: models/manifest.json models/forecaster/manifest.json

# The functions in the foreground as `func run --builder=host` runs them (func-python's server,
# this venv), configured from the environment: REDIS_URL, PROMETHEUS_URL / KUBERNETES_API_URL.
run-forecast: venv models
	LISTEN_ADDRESS=127.0.0.1:$(PORT) FORECASTER_ROOT=$${FORECASTER_ROOT:-$(CURDIR)/models/forecaster} \
	  PYTHONPATH=functions/forecast $(PY) scripts/run_function.py functions/forecast

run-scale: venv
	LISTEN_ADDRESS=127.0.0.1:$(PORT) PYTHONPATH=functions/scale $(PY) scripts/run_function.py functions/scale

serve: models
	MODEL_SHA256=$${MODEL_SHA256:-$$($(PY) -c "from training.publish_model import pinned_env; print(pinned_env('$(MODEL)').get('MODEL_SHA256', ''))")} \
	  $(PY) -m infer.serve --model $(MODEL) --port $(PORT)

# The model pool in the foreground: every model `make models` wrote (models/ is its repository),
# each loaded on its first request; POOL_MEMORY_MB and the other settings from the environment.
.PHONY: serve-pool bench-pool
serve-pool: models
	$(PY) -m infer.serve --repository models --port $(PORT)

# The whole loop, predictive vs KPA-only, on real processes: ~5 minutes, report + reports/demo.png.
demo: apt venv models
	$(PY) scripts/demo.py
	$(PY) scripts/demo_fleet.py

# The fleet: 20 sparse models, per-model Knative vs the pool with predictive placement (~5 min, reports/demo_fleet.png).
.PHONY: demo-fleet
demo-fleet: apt venv models
	$(PY) scripts/demo_fleet.py

# The whole local loop under faults (Redis wiped, targets down, forged, future, duplicate and
# interleaved events): a table of decisions held, wrongly lowered, stuck warm and events lost.
chaos: apt venv models
	$(PY) scripts/chaos.py

# The shared package (fncommon/, the one source) written into each function directory, which func
# builds alone; `make test` fails while a copy differs from its source (tests/test_function_packaging.py).
.PHONY: vendor
vendor:
	$(PYTHON) scripts/vendor.py

# mypy (mypy.ini) over each function as it is built, from its own directory; `make test` runs it
# too (tests/test_types.py).
.PHONY: typecheck
typecheck: venv
	$(PY) scripts/typecheck.py

demo-infer: venv models
	$(PY) scripts/demo_infer.py

test: apt venv
	$(PY) -m pytest -q tests

# The documentation site (mkdocs.yml, docs/): the pages generated from code and from committed
# FORMAT=json results first, then a strict build into site/ (git-ignored). `make test` checks the
# same (tests/docs/): a broken link, a page out of the navigation or a stale generated page fails.
.PHONY: docs
docs: venv
	$(PY) scripts/gen_settings_reference.py
	$(PY) scripts/gen_results_tables.py
	$(PY) -m mkdocs build --strict

bench-infer: venv models
	@bash scripts/ensure-apt.sh wrk:wrk
	$(PY) bench/bench_infer.py

# The pool at repository sizes (start, memory per entry; SIZES="1000 10000"), model load p50/p99
# (ONNX wine, diabetes) in a warm pod, and the pool's cold start against the one-model server's,
# in one run: tables of ratios.
SIZES ?= 1000 10000
bench-pool: venv models
	$(PY) bench/bench_pool.py --sizes $(SIZES)

# The design page's measurements (docs/design.md): Flask vs the raw WSGI adapter on the same data
# plane, and prometheus-api-client vs the forecast function's own client (two fresh virtualenvs).
.PHONY: bench-wsgi bench-prometheus-clients
bench-wsgi: venv models
	$(PY) bench/bench_wsgi_frameworks.py

bench-prometheus-clients: venv
	$(PY) bench/bench_prometheus_clients.py

bench-forecaster: venv
	$(PY) bench/bench_forecaster.py

# Forecast function cold and steady tick time, peak RSS, Redis bytes per service, against a
# back-filled real Prometheus; SIZES="1000 10000" (niced: it is long and other work shares the machine).
SIZES ?= 1000 10000
bench-forecast: apt venv models
	nice -n 10 $(PY) bench/bench_forecast_tick.py --sizes $(SIZES)

# Scale function first and steady event time, API calls, peak RSS, Redis bytes per service,
# against the Kubernetes API double; SIZES="1000 10000".
bench-scale: apt venv
	nice -n 10 $(PY) bench/bench_scale.py --sizes $(SIZES)

# Walk-forward backtest of every policy; plots go to reports/. TRACE=<file> for any trace in the
# common form, FORMAT=json for machine-readable scores, COLD_START_S / CAPACITY_RPS to change both,
# FIT_ON=trace to fit the walk-forward forecaster on the trace alone (default: fleet+trace).
backtest: venv
	$(PY) -m training.backtest $(if $(TRACE),--trace $(TRACE),$(foreach t,$(SHARED_TRACES),--trace $(t))) \
	  --format $(FORMAT) --cold-start-s $(COLD_START_S) --capacity-rps $(CAPACITY_RPS) --fit-on $(FIT_ON) --plots reports --sweep

# Walk-forward fleet backtest (per-model Knative vs the pool + placement + pre-warming) on both
# shared fleets, or FLEET=<file> (timestamp,service,requests + <file>.json); tables (FORMAT=json:
# one object per policy and setting) on stdout, a progress bar on stderr, plots in reports/;
# INFO=<file.json>: what each run found besides the scores (skill, placement, warmth chosen).
SHARED_FLEETS := $(wildcard ../shared/traces/*_fleet_*.csv)
FLEET ?=
MAX_SCALE ?= 1000
FLEET_BUDGET ?= 1.0
MODELS_PER_POD ?=
MODEL_LOAD_MS ?=
INFO ?=
backtest-fleet: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m training.backtest $(if $(FLEET),--fleet $(FLEET),$(foreach f,$(SHARED_FLEETS),--fleet $(f))) \
	  --format $(FORMAT) --cold-start-s $(COLD_START_S) --capacity-rps $(CAPACITY_RPS) --max-scale $(MAX_SCALE) \
	  $(if $(FLEET_BUDGET),--fleet-budget $(FLEET_BUDGET)) $(if $(MODELS_PER_POD),--models-per-pod $(MODELS_PER_POD)) $(if $(MODEL_LOAD_MS),--model-load-ms $(MODEL_LOAD_MS)) \
	  $(if $(INFO),--info $(INFO)) --plots reports --sweep

# What-if on your own Prometheus: every matching service's history read as the forecast function
# reads it, backtested as a trace (and as a fleet when several): same tables and plots.
PROMETHEUS_URL ?=
PRESET ?= knative-1.21
SELECTOR ?=
DAYS ?= 7
whatif: venv
	@test -n "$(PROMETHEUS_URL)" || { echo "give PROMETHEUS_URL=http://prometheus:9090 [PRESET=$(PRESET)] [SELECTOR='namespace=\"models\"'] [DAYS=7]"; exit 2; }
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m training.backtest --prometheus $(PROMETHEUS_URL) --preset $(PRESET) \
	  --selector '$(SELECTOR)' --days $(DAYS) --format $(FORMAT) --cold-start-s $(COLD_START_S) --capacity-rps $(CAPACITY_RPS) \
	  --fit-on $(FIT_ON) --plots reports

# A real install, checked end to end (read-only, your kubeconfig): CRDs, flags, the functions
# Ready, a ping producing a forecast and a decision (REDIS_URL), a model through its host
# (INGRESS_URL), the pool's mappings (POOL=1), Prometheus' series (PROMETHEUS_URL, PRESET).
.PHONY: verify-cluster
REDIS_URL ?=
INGRESS_URL ?=
POOL ?=
verify-cluster: venv
	$(PY) scripts/verify_cluster.py --preset $(PRESET) $(if $(REDIS_URL),--redis-url '$(REDIS_URL)') \
	  $(if $(PROMETHEUS_URL),--prometheus-url $(PROMETHEUS_URL)) $(if $(INGRESS_URL),--ingress-url $(INGRESS_URL)) \
	  $(if $(POOL),--pool) $(if $(CONTEXT),--context $(CONTEXT))

clean:
	rm -rf $(VENV) models .pytest_cache .hypothesis site
