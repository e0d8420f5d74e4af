# The platform's verbs. Every verb bootstraps .venv from requirements.lock on first use.
# Knobs (override on the command line, e.g. `make train EPOCHS=3`):
PYTHON   ?= python3
VENV     ?= .venv
DATA     ?= data/synthetic
ARTIFACTS ?= artifacts
VISITORS ?= 6000
SEED     ?= 7
WORLD    ?= bank
EPOCHS   ?= 16

PY := $(VENV)/bin/python
INTENT := $(VENV)/bin/intent
GENERATE = $(INTENT) data --out $(DATA) --visitors $(VISITORS) --seed $(SEED) --world $(WORLD)

.PHONY: help venv data train probe taxonomy taxonomy-drift bench-train run test test-unit lint lock clean
HEAD       ?= $(ARTIFACTS)/intent_head.json
REPOSITORY ?= model_repository

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned dependencies

data: venv  ## generate a synthetic world's clickstream into $(DATA) (WORLD=bank|weak|credit_union)
	$(GENERATE)

$(DATA)/events.jsonl: | venv
	$(GENERATE)

train: venv $(DATA)/events.jsonl  ## featurize and train the self-supervised session encoder into $(ARTIFACTS)
	$(INTENT) train --data $(DATA) --artifacts $(ARTIFACTS) --epochs $(EPOCHS) --seed $(SEED)

probe: venv $(DATA)/events.jsonl  ## linear probe: embedding vs bag-of-pages -> reports/encoder.json
	$(INTENT) probe --data $(DATA) --artifacts $(ARTIFACTS) --report reports/encoder.json

taxonomy: venv words $(DATA)/events.jsonl  ## LLM taxonomy + labels, distilled head -> $(ARTIFACTS)/taxonomy.yaml, reports/taxonomy.json
	$(INTENT) taxonomy --data $(DATA) --artifacts $(ARTIFACTS) --taxonomy-report reports/taxonomy.json

NEW ?=

taxonomy-drift: venv  ## the head's label mix on new logs NEW=dir against the pinned taxonomy's baseline (PSI, JS distance) + candidate new intents -> reports/taxonomy_drift.json
	@test -n "$(NEW)" || { echo "usage: make taxonomy-drift NEW=path/to/new/logs (a data directory in the contract's format)" >&2; exit 2; }
	$(INTENT) taxonomy-drift --data $(NEW) --artifacts $(ARTIFACTS) --taxonomy $(ARTIFACTS)/taxonomy.yaml \
		--baseline-data $(DATA) --report reports/taxonomy_drift.json

bench-train: venv $(DATA)/events.jsonl  ## training and inference throughput -> reports/bench_train.json
	$(INTENT) bench-train --data $(DATA) --report reports/bench_train.json

# -- serving: export to a Triton model repository, serve it, benchmark it --------------------------------
TARGET     ?= cpu
REPO_VERSION  ?= current
MODEL_CONTROL ?= none
HEAD       ?= $(ARTIFACTS)/intent_head.json
REPOSITORY ?= model_repository
NEED_HEAD   = @test -f $(HEAD) || { echo "$(HEAD) is missing: run 'make taxonomy' first (or pass HEAD=path/to/intent_head.json)" >&2; exit 2; }

.PHONY: export serve-triton load-triton bench-triton

export: venv  ## encoder + intent head -> ONNX -> Triton repository $(REPOSITORY) + its manifest.json (TARGET=cpu|gpu; REPO_VERSION=next writes v+1 beside v for hot reload)
	$(NEED_HEAD)
	$(PY) -m training.export export --artifacts $(ARTIFACTS) --head $(HEAD) --repository $(REPOSITORY) --target $(TARGET) --version $(REPO_VERSION)

serve-triton: venv  ## serve $(REPOSITORY) on the real Triton from the wheel (CPU) until Ctrl-C (MODEL_CONTROL=explicit: new versions load with load-triton)
	$(PY) -m training.export serve-triton --repository $(REPOSITORY) --model-control $(MODEL_CONTROL)

load-triton: venv  ## hot reload: the running Triton (MODEL_CONTROL=explicit) loads $(REPOSITORY)'s newest version; the gateway follows
	$(PY) -m training.export load-triton --repository $(REPOSITORY)

bench-triton: venv $(DATA)/events.jsonl  ## perf_analyzer on the ensemble, c=1..16, with/without batching -> reports/bench_triton.json
	$(NEED_HEAD)
	$(PY) -m training.export bench-triton --artifacts $(ARTIFACTS) --head $(HEAD) --data $(DATA) --report reports/bench_triton.json

run: venv words  ## the main job: data -> train -> probe -> taxonomy -> ranker -> export -> Triton + gateway, ranked tiles
	$(INTENT) run --data $(DATA) --artifacts $(ARTIFACTS) --visitors $(VISITORS) --epochs $(EPOCHS) --seed $(SEED)
	$(PY) -m training.evaluation --data $(DATA) --artifacts $(ARTIFACTS) --reports $(ARTIFACTS)/run_eval \
		--seeds 0 --llm-customers 0 --no-robustness --no-second-world --n-boot 20 --no-progress > /dev/null
	$(PY) -m training.export export --artifacts $(ARTIFACTS) --head $(HEAD) --repository $(REPOSITORY) --target cpu
	$(PY) -m harness.replay --data $(DATA) --artifacts $(ARTIFACTS) --repository $(REPOSITORY)

# -- evaluation: the paper's two tasks on the synthetic bank (issue 4) ---------------------------------------
LLM_CUSTOMERS ?= 150
SECOND_WORLD ?= credit_union

.PHONY: eval

eval: venv $(DATA)/events.jsonl  ## tile ranking + conversion on DATA, a 2nd world (credit_union) and robustness (weak), with capture -> reports/eval.{md,json}, PNGs, $(ARTIFACTS)/ranker.json
	@test -f $(ARTIFACTS)/encoder.pt || $(MAKE) train
	@test -f $(ARTIFACTS)/intent_head.json || $(MAKE) taxonomy
	$(PY) -m training.evaluation --data $(DATA) --artifacts $(ARTIFACTS) --reports reports --llm-customers $(LLM_CUSTOMERS) \
		--second-world $(SECOND_WORLD)

# -- gateway: gRPC contract, session store, serving ------------------------------------------------------------
BUF := .cache/buf/node_modules/.bin/buf

.PHONY: proto proto-lint redis words serve bench-gateway bench-interceptor tracing-check

proto: venv  ## generate the gateway's Python stubs from proto/ into gateway/_gen (never edit them by hand)
	$(PY) -c "from gateway.api import generate; generate()"

$(BUF):
	npm install --silent --prefix .cache/buf @bufbuild/buf@1.50.0

proto-lint: $(BUF)  ## buf lint of proto/ (STANDARD rules)
	cd proto && ../$(BUF) lint

WORDS ?= /usr/share/dict/words

words: $(WORDS)  ## install the English word list the taxonomy's label validator reads (Debian's wamerican)

$(WORDS):
	@if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq wamerican > /dev/null || { apt-get update -qq && apt-get install -y -qq wamerican > /dev/null; }; \
	else sudo apt-get install -y -qq wamerican > /dev/null; fi

redis:  ## install redis-server and redis-cli (the Redis store's tests start their own on a free loopback port)
	@{ command -v redis-server && command -v redis-cli; } > /dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq redis-server > /dev/null || { apt-get update -qq && apt-get install -y -qq redis-server > /dev/null; }; \
		else sudo apt-get install -y -qq redis-server > /dev/null; fi; }

serve: venv  ## the gateway on 127.0.0.1:50051 (config: --config FILE, GATEWAY_* env); needs make serve-triton
	$(PY) -m gateway.server

bench-gateway: venv  ## RankTiles p50/p99 and throughput at c=1,8,32 beside raw Triton -> reports/bench_gateway.json (needs make export)
	$(PY) -m harness.bench_gateway --data $(DATA) --artifacts $(ARTIFACTS) --repository $(REPOSITORY) --report reports/bench_gateway.json

bench-interceptor: venv  ## server CPU per call of each interceptor setup (none, metrics, upstream vs gateway tracing) -> reports/interceptor_bench.json
	$(PY) -m harness.bench_interceptor --out reports/interceptor_bench.json

tracing-check: venv  ## whole-trace share (gRPC metadata vs HTTP into Triton) + tracing overhead -> reports/tracing.json (needs make export)
	$(PY) -m harness.tracing_check --data $(DATA) --artifacts $(ARTIFACTS) --repository $(REPOSITORY) --out reports/tracing.json

serve-kserve: venv  ## make serve's product as a KServe transformer: v2 reranker (REST 8080, gRPC 8081) + the typed API on 127.0.0.1:50051, in front of Triton's gRPC (PREDICTOR=127.0.0.1:8001)
	$(PY) -m gateway.kserve_transformer --predictor_host $(or $(PREDICTOR),127.0.0.1:8001) --predictor_protocol grpc-v2 --artifacts $(ARTIFACTS)

# -- one benchmark of both tiers (issue 7): perf_analyzer on Triton and the KServe v2 transformer, typed gRPC load --
.PHONY: bench

bench: venv $(DATA)/events.jsonl  ## Triton ensemble + KServe v2 reranker + typed RankTiles at c=1,4,8 -> reports/bench.{md,json} (needs make export)
	$(PY) -m harness.bench_all --data $(DATA) --artifacts $(ARTIFACTS) --repository $(REPOSITORY) --report reports/bench.json

test: venv redis words chromium java proto-lint  ## the full tier (CI): ruff, import contracts, buf lint, every test incl. -m integration (real Triton, Redis, gateway, LLM); prints the 20 slowest
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q --durations=20

test-unit: venv words  ## the quick tier, under a minute on 2 cores: import contracts, tests/unit + tests/chart, no servers (-m 'not integration')
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -m 'not integration' --durations=10 tests/unit tests/chart

lint: venv  ## ruff and the import contracts (pyproject's [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

lock:  ## re-resolve requirements.lock from pyproject (needs network)
	rm -rf /tmp/intent-lock && $(PYTHON) -m venv /tmp/intent-lock
	/tmp/intent-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/intent-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock

# -- the gateway image's own dependency set (issue 15): requirements-gateway.lock, a subset of requirements.lock ----
.PHONY: lock-gateway footprint

GATEWAY_LOCK_ENV := /tmp/intent-lock-gateway

lock-gateway:  ## re-resolve requirements-gateway.lock (gateway image) within requirements.lock's pins (needs network)
	rm -rf $(GATEWAY_LOCK_ENV) && $(PYTHON) -m venv $(GATEWAY_LOCK_ENV)
	$(GATEWAY_LOCK_ENV)/bin/pip install --quiet -r deploy/docker/requirements-gateway.in -c requirements.lock
	{ echo "# The gateway image's resolved set (deploy/docker/Dockerfile): deploy/docker/requirements-gateway.in within"; \
	  echo "# requirements.lock's pins, so every package has the full environment's version. Regenerate: make lock-gateway."; \
	  $(GATEWAY_LOCK_ENV)/bin/pip freeze; } > requirements-gateway.lock

footprint: venv  ## gateway env (requirements-gateway.lock) vs full .venv: MB, packages, start-up to SERVING -> reports/footprint.json
	$(PY) -m harness.footprint --artifacts $(ARTIFACTS) --repository $(REPOSITORY) --out reports/footprint.json

clean:  ## remove generated data and artifacts (keeps .venv)
	rm -rf data artifacts .pytest_cache

# -- Helm chart (issue 8): strict lint, render every variant, validate offline (no helm binary, no cluster) ------
.PHONY: chart

chart: venv  ## helm lint --strict + render every values variant -> reports/chart/*.yaml, validated for Kubernetes 1.33
	$(PY) deploy/helm/chart_check.py --out reports/chart
	$(VENV)/bin/pytest -q tests/chart

# -- intent analytics for people who read them (issue 17): one self-contained HTML page ------------------------
REPORT_OUT ?= reports/intents.html

.PHONY: report chromium

report: venv $(DATA)/events.jsonl  ## the distilled head's intents on DATA: share over time, device, referrer, distinctive pages and searches, conversion, confidence -> $(REPORT_OUT)
	$(NEED_HEAD)
	$(INTENT) report --data $(DATA) --artifacts $(ARTIFACTS) --out $(REPORT_OUT)

chromium:  ## install Debian's chromium (the analytics page's test renders it headless)
	@command -v chromium > /dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq chromium > /dev/null || { apt-get update -qq && apt-get install -y -qq chromium > /dev/null; }; \
		else sudo apt-get install -y -qq chromium > /dev/null; fi; }

# -- production hardening (issue 16): retention, fuzzing, load, the reliability report ---------------------------
.PHONY: prune fuzz bench-load reliability

prune: venv  ## retention now: prune events, links, caches and tombstones past retention_days in the configured store (GATEWAY_* env / --config)
	$(PY) -m gateway.retention $(PRUNE_ARGS)

fuzz: venv redis  ## >= 10,000 generated requests (from the proto's descriptors) + raw bytes to every method of a real gateway: 0 UNKNOWN/INTERNAL -> reports/fuzz.json
	$(PY) -m harness.fuzz --out reports/fuzz.json $(FUZZ_ARGS)

bench-load: venv  ## 100,000 RankTiles at concurrency 32 on the shipped path (TLS + tokens, real Triton): errors, p50/p99, RSS growth -> reports/bench_load.json (needs make export)
	$(PY) -m harness.bench_load --repository $(REPOSITORY) --artifacts $(ARTIFACTS) --out reports/bench_load.json $(LOAD_ARGS)

reliability: venv redis  ## fuzz + auth matrix + forget residue + fault runs + load -> reports/reliability.json (needs make export)
	$(PY) -m harness.reliability --repository $(REPOSITORY) --artifacts $(ARTIFACTS) --out reports/reliability.json

# -- Spark for data that outgrows one machine (issue 18) ---------------------------------------------------------
.PHONY: java spark-featurize
SPARK_OUT ?= data/shards-spark
SPARK_ARGS ?=

java:  ## install Debian's Java 17 runtime (openjdk-17-jre-headless) for the Spark job and its tests; skipped when java -version is 17+
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); [ "$${v:-0}" -ge 17 ] || { \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq openjdk-17-jre-headless > /dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless > /dev/null; }; \
		else sudo apt-get install -y -qq openjdk-17-jre-headless > /dev/null; fi; }

spark-featurize: venv java  ## the PySpark job on DATA in local[2]: validate, sessionize, featurize -> shards in SPARK_OUT (SPARK_ARGS: --master, --featurizer, --partitions)
	$(PY) -m training.spark.job --input $(DATA) --output $(SPARK_OUT) $(SPARK_ARGS)

# -- Distributed training over featurized shards (issue 18) -----------------------------------------------------
.PHONY: train-ddp
SHARDS ?= data/shards
NPROC ?= 2
DDP_ARGS ?=

train-ddp: venv  ## torchrun data-parallel encoder training on NPROC local ranks (gloo on CPU, NCCL on GPU) over the shards in SHARDS -> $(ARTIFACTS) (DDP_ARGS: --batch-size per rank, --dropout, --device)
	$(VENV)/bin/torchrun --standalone --nproc-per-node $(NPROC) -m training.encoder.distributed --shards $(SHARDS) --out $(ARTIFACTS) --epochs $(EPOCHS) --seed $(SEED) $(DDP_ARGS)

# -- issue 18: the columnar single-machine path ---------------------------------------------------------------
.PHONY: featurize bench-data

featurize: venv $(DATA)/events.jsonl  ## validate, sessionize and featurize DATA on one machine (columnar) -> shards in SHARDS
	$(PY) -m training.columnar --data $(DATA) --out $(SHARDS)

bench-data: venv  ## events/s and peak RSS, columnar vs row-level, 1M and 10M synthetic events -> reports/bench_data.json
	$(PY) -m harness.bench_data --work artifacts/bench_data --report reports/bench_data.json
