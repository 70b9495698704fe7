# vitreg: every target works from a clean clone; the environment is created on first use.
# `make help` lists the targets.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
STAMP       := $(VENV)/.vitreg-installed
KERNEL      := vitreg
N           ?=
JOBS        ?= 2
PARAMS      ?=
SET         ?=
# `make reproduce PARAMS=my.yaml SET="02.n_images=512 common.device=cuda"`: overrides for run/smoke/notebook
RUN_ARGS    := $(if $(PARAMS),--params $(PARAMS)) $(foreach s,$(SET),--set $(s))

.DEFAULT_GOAL := help
.PHONY: help env test unit robustness smoke reproduce notebook weights benchmark strip clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[notebooks,dev]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (vitreg)" >/dev/null
	@touch $(STAMP)

env: $(STAMP) ## Create the environment (.venv) and its Jupyter kernel, if missing

test: $(STAMP) ## Unit tests + every notebook under the smoke profile (offline, CPU)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider tests

unit: $(STAMP) ## Unit tests only (no notebooks)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider -m "not notebook" tests

robustness: $(STAMP) ## The bad-input and fault corpus (issue 12): its tests, then one summary (cases, clear errors, crashes, silent wrong, lost)
	HF_HUB_OFFLINE=1 PYTHONPATH=tests $(PY) -m pytest -q -p no:cacheprovider -p robustness_plugin -m robustness tests

smoke: $(STAMP) ## Run every notebook with the smoke profile; outputs go to build/smoke/ (PARAMS=, SET= override)
	HF_HUB_OFFLINE=1 $(VENV)/bin/vitreg run --profile smoke $(RUN_ARGS)

.PHONY: lecture
lecture: $(STAMP) ## Run every notebook with the lecture profile: pretrained small models, bundled photos, CPU; outputs in build/lecture/
	$(VENV)/bin/vitreg run --profile lecture $(RUN_ARGS)

reproduce: $(STAMP) ## Run every notebook with the real parameters (weights, data, GPU); PARAMS=my.yaml SET="02.n_images=512" override
	$(VENV)/bin/vitreg run --profile real $(RUN_ARGS)

notebook: $(STAMP) ## Run one notebook, e.g. `make notebook N=02` (add PROFILE=smoke for the smoke profile)
	@test -n "$(N)" || (echo "usage: make notebook N=02 [PROFILE=smoke] [PARAMS=my.yaml] [SET=\"02.n_images=64\"]"; exit 2)
	$(VENV)/bin/vitreg run --profile $(or $(PROFILE),real) --only $(N) $(RUN_ARGS)

weights: $(STAMP) ## Download every model the notebooks use into the weights folder (needs internet)
	$(VENV)/bin/vitreg weights download --notebooks

benchmark: $(STAMP) ## Capture overhead, memory, feature cache 2nd/1st run, images/s vs the FLOP limit (prints ratios)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_capture.py && HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_scale.py

strip: $(STAMP) ## Strip outputs from notebooks/ (done before every commit)
	$(VENV)/bin/vitreg strip

clean: ## Remove build outputs (keeps the environment, weights and feature caches)
	rm -rf build figures results .pytest_cache
