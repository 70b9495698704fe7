# vitreg: every target works from a clean clone; the environment is created on first use.
# `make help` lists the targets.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
STAMP       := $(VENV)/.vitreg-installed
KERNEL      := vitreg
BOOK_STAMP  := $(VENV)/.vitreg-book-installed
# where `make test` left the notebook tests' smoke runs, if it was run with PYTEST_ADDOPTS=--basetemp=DIR (.ci/run)
PYTEST_TMP  ?=
N           ?=
JOBS        ?= 2
PARAMS      ?=
SET         ?=
# `make reproduce GPUS=8`: fill the feature caches with `torchrun --standalone --nproc_per_node 8 -m vitreg extract all` first
GPUS        ?=
# `make benchmark FULL=1`: every benchmark row (the default is the quick set, a few minutes on 2 cores)
FULL        ?=
# `make reproduce PARAMS=my.yaml SET="02.n_images=512 common.device=cuda"`: overrides for run/smoke/notebook
# `make reproduce DATA=none`: do not fetch the downloadable datasets the notebooks read (`vitreg data list`)
DATA        ?=
RUN_ARGS    := $(if $(PARAMS),--params $(PARAMS)) $(foreach s,$(SET),--set $(s))

.DEFAULT_GOAL := help
.PHONY: help env test unit robustness smoke reproduce notebook weights benchmark strip clean book test-book handout lab

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

robustness: $(STAMP) ## The bad-input and fault corpus: its tests, then one summary (cases, clear errors, crashes, silent wrong, lost)
	HF_HUB_OFFLINE=1 PYTHONPATH=tests $(PY) -m pytest -q -p no:cacheprovider -p robustness_plugin -m robustness tests

smoke: $(STAMP) ## Run every notebook with the smoke profile; outputs go to build/smoke/ (PARAMS=, SET= override)
	HF_HUB_OFFLINE=1 $(VENV)/bin/vitreg run --profile smoke $(RUN_ARGS)

.PHONY: lecture
lecture: $(STAMP) ## Run every notebook with the lecture profile: pretrained small models, bundled photos, CPU; outputs in build/lecture/
	$(VENV)/bin/vitreg run --profile lecture $(RUN_ARGS)

reproduce: $(STAMP) ## Run every notebook with the real parameters (weights, data, GPU); GPUS=8 extracts on 8 GPUs first; PARAMS=, SET= override; DATA=none fetches no datasets
	$(if $(GPUS),$(VENV)/bin/torchrun --standalone --nproc_per_node $(GPUS) -m vitreg extract all --profile real $(RUN_ARGS))
	$(if $(DATA),VITREG_FETCH=$(DATA) )$(VENV)/bin/vitreg run --profile real $(RUN_ARGS)

notebook: $(STAMP) ## Run one notebook, e.g. `make notebook N=02` (add PROFILE=smoke for the smoke profile)
	@test -n "$(N)" || (echo "usage: make notebook N=02 [PROFILE=smoke] [PARAMS=my.yaml] [SET=\"02.n_images=64\"]"; exit 2)
	$(VENV)/bin/vitreg run --profile $(or $(PROFILE),real) --only $(N) $(RUN_ARGS)

weights: $(STAMP) ## Download every model the notebooks use into the weights folder (needs internet)
	$(VENV)/bin/vitreg weights download --notebooks

benchmark: $(STAMP) ## Image preparation, cache reads, capture overhead, cache 2nd/1st run, FLOP limit, cost models vs CPU (prints ratios; FULL=1: every row)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_images.py $(if $(FULL),--full)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_capture.py $(if $(FULL),--full)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_scale.py $(if $(FULL),--full)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_costs.py $(if $(FULL),--full)

.PHONY: test-gpu
test-gpu: $(STAMP) ## On a GPU machine: the exactness tests on CUDA
	@$(PY) -c "import torch; print('CUDA:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU here, so every test below is skipped (exit 0); run this on a GPU machine')"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider -m gpu tests

.PHONY: benchmark-gpu
benchmark-gpu: $(STAMP) ## On a GPU machine: every figure the run-time table assumes, in under 10 minutes on one H100
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_gpu.py

strip: $(STAMP) ## Strip outputs from notebooks/ (done before every commit)
	$(VENV)/bin/vitreg strip

$(BOOK_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[notebooks,dev,book]"
	@touch $(BOOK_STAMP)

book: $(BOOK_STAMP) ## Jupyter Book of the executed notebooks (real run if any, else smoke) and the report, offline: build/book/html/index.html; INSTRUCTOR=1: solutions open
	HF_HUB_OFFLINE=1 $(VENV)/bin/vitreg book $(if $(INSTRUCTOR),--instructor)

test-book: $(BOOK_STAMP) ## Book from the smoke run (reused, else run once), every page checked in headless Chromium with no network
	@ls build/smoke/notebooks/*.ipynb >/dev/null 2>&1 || ls $(PYTEST_TMP)/*/notebooks/*.ipynb >/dev/null 2>&1 \
		|| $(MAKE) smoke
	HF_HUB_OFFLINE=1 $(VENV)/bin/vitreg book --run smoke $(if $(PYTEST_TMP),--collect $(PYTEST_TMP)) --out build/book-smoke
	VITREG_BOOK_REQUIRED=1 VITREG_BOOK_DIR=build/book-smoke HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_book.py

handout: $(STAMP) ## Student copies, CPU-safe (lecture parameters), an empty answer cell for each `solution` cell: build/handout/*.ipynb
	$(VENV)/bin/vitreg handout

lab: $(STAMP) ## Open the notebooks in JupyterLab (pick the "Python (vitreg)" kernel); VITREG_PROFILE=lecture: they take the lecture parameters
	VITREG_LAB_PROFILE=$(VITREG_PROFILE) $(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean: ## Remove build outputs (keeps the environment, weights and feature caches)
	rm -rf build figures results .pytest_cache
