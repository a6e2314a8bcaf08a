# The two commands a new user needs: `make demo`, then `make test`. `make help` lists the rest.
PYTHON_SYSTEM ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
# Number of demo images drawn when data/SIGNS does not exist yet
DEMO_IMAGES ?= 3000
MODEL_DIR ?= experiments/base_model
# The demo's experiment: base_model with the random flip on, which the drawn hands reward
DEMO_DIR := experiments/demo

.DEFAULT_GOAL := help
# The text demo's corpus, its built data and its experiment
NER_SENTENCES ?= 3000
NER_DIR := experiments/ner_base

.PHONY: help install demo demo-ner data train evaluate test test-all bench lint tensorboard clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with the pinned requirements

$(VENV)/.installed: requirements.txt requirements-search.txt requirements-tracking.txt requirements-dev.txt
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: install data ## Set up, build the demo data, train experiments/demo and evaluate it
	@$(MAKE) --no-print-directory train evaluate MODEL_DIR=$(DEMO_DIR)
	@$(PYTHON) synthesize_results.py --parent_dir experiments
	@echo
	@echo "Metrics:     $(DEMO_DIR)/metrics_eval_best_weights.json, $(DEMO_DIR)/metrics_test_best_weights.json"
	@echo "Per class:   $(DEMO_DIR)/evaluate.log, $(DEMO_DIR)/confusion_matrix_test_best_weights.png"
	@echo "Logs:        $(DEMO_DIR)/train.log"
	@echo "Weights:     $(DEMO_DIR)/best_weights, $(DEMO_DIR)/last_weights"
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir experiments"

demo-ner: install ## The text demo: write a synthetic NER corpus, build it, train experiments/ner_base, evaluate it
	@if [ ! -d data/NER ]; then $(PYTHON) build_vocab.py --synthetic $(NER_SENTENCES); \
	elif [ ! -d data/built_NER ]; then $(PYTHON) build_vocab.py; \
	else echo "data/built_NER exists: skipping the build (delete it to rebuild)"; fi
	$(PYTHON) train.py --model_dir $(NER_DIR) --data_dir data/built_NER --restore_from $(NER_DIR)/last_weights
	$(PYTHON) evaluate.py --model_dir $(NER_DIR)
	@echo
	@$(PYTHON) -m demo.ner_baseline --data_dir data/built_NER --model_dir $(NER_DIR)

data: install ## Draw the demo data if data/SIGNS is missing, and build data/64x64_SIGNS
	@if [ ! -d data/SIGNS ]; then $(PYTHON) build_dataset.py --synthetic $(DEMO_IMAGES); \
	elif [ ! -d data/64x64_SIGNS ]; then $(PYTHON) build_dataset.py; \
	else echo "data/64x64_SIGNS exists: skipping the build (delete it to rebuild)"; fi

train: install ## Train MODEL_DIR, continuing from its last_weights if it has some
	$(PYTHON) train.py --model_dir $(MODEL_DIR) --restore_from $(MODEL_DIR)/last_weights

evaluate: install ## Evaluate MODEL_DIR's best weights on the test split
	$(PYTHON) evaluate.py --model_dir $(MODEL_DIR)

test: install ## Run the fast tests, the ones to run after each edit (about 2 minutes on 2 cores)
	$(PYTHON) -m pytest

test-all: install ## Add the end-to-end tests: subprocesses, kills, full disks, servers (about 11 to 17 minutes; CI runs it)
	$(PYTHON) -m pytest -m ""

bench: install ## Measure the template's speed on this machine (benchmarks/benchmark.py)
	$(PYTHON) benchmarks/benchmark.py --json benchmarks/last_run.json

lint: install ## Check style with ruff
	$(VENV)/bin/ruff check .

tensorboard: install ## Start TensorBoard over all experiments
	$(VENV)/bin/tensorboard --logdir experiments

clean: install ## Delete the demo data and every run's outputs (keeps params.json and search.json files)
	$(PYTHON) -m model.utils.run_folder experiments
	rm -rf data
