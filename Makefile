# The platform's verbs. Every verb bootstraps .venv from requirements.lock on first use.
# Knobs (override on the command line, e.g. `make train EPOCHS=3`):
PYTHON   ?= python3
VENV     ?= .venv
DATA     ?= data/synthetic
ARTIFACTS ?= artifacts
VISITORS ?= 6000
SEED     ?= 7
EPOCHS   ?= 8

PY := $(VENV)/bin/python
INTENT := $(VENV)/bin/intent
GENERATE = $(INTENT) data --out $(DATA) --visitors $(VISITORS) --seed $(SEED)

.PHONY: help venv data train probe bench-train run test lint lock clean

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned dependencies

data: venv  ## generate the synthetic bank's clickstream into $(DATA)
	$(GENERATE)

$(DATA)/events.jsonl: | venv
	$(GENERATE)

train: venv $(DATA)/events.jsonl  ## featurize and train the self-supervised session encoder into $(ARTIFACTS)
	$(INTENT) train --data $(DATA) --artifacts $(ARTIFACTS) --epochs $(EPOCHS) --seed $(SEED)

probe: venv $(DATA)/events.jsonl  ## linear probe: embedding vs bag-of-pages -> reports/encoder.json
	$(INTENT) probe --data $(DATA) --artifacts $(ARTIFACTS) --report reports/encoder.json

bench-train: venv $(DATA)/events.jsonl  ## training and inference throughput -> reports/bench_train.json
	$(INTENT) bench-train --data $(DATA) --report reports/bench_train.json

run: venv  ## the main job on embedded defaults: data -> train -> probe, with a summary
	$(INTENT) run --data $(DATA) --artifacts $(ARTIFACTS) --visitors $(VISITORS) --epochs $(EPOCHS) --seed $(SEED)

test: venv  ## lint and the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: venv  ## ruff
	$(VENV)/bin/ruff check .

lock:  ## re-resolve requirements.lock from pyproject (needs network)
	rm -rf /tmp/intent-lock && $(PYTHON) -m venv /tmp/intent-lock
	/tmp/intent-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/intent-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock

clean:  ## remove generated data and artifacts (keeps .venv)
	rm -rf data artifacts .pytest_cache
