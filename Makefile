# The README's two commands: `make train` (the main job) and `make test` (the suite).
# Both set up everything first: Debian's Fashion-MNIST package and a virtualenv with the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IDX_DIR := /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/default
# Use sudo only when not root (CI and these machines run as root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data train evaluate diagnose export likelihood test clean

setup: data $(VENV)/.installed

data: $(IDX_DIR)/train-images-idx3-ubyte.gz

$(IDX_DIR)/train-images-idx3-ubyte.gz:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

train: setup
	$(BIN)/python trainers/train.py --workdir $(WORKDIR) --verbose 2

# After `make train`: log-likelihood (K=5000), the aggregate-posterior report, a TF Serving export.
evaluate: setup
	$(BIN)/python trainers/evaluate.py --workdir $(WORKDIR) --num-samples 5000

diagnose: setup
	$(BIN)/python trainers/diagnose.py --workdir $(WORKDIR)

export: setup
	$(BIN)/python trainers/export.py --workdir $(WORKDIR) --export-base saved_models/fashion_vae

# The published-protocol likelihood benchmark for one model (benchmarks/likelihood.py --list).
MODEL ?= mlp
FLAGS ?=
likelihood: setup
	$(BIN)/python benchmarks/likelihood.py --model $(MODEL) $(FLAGS)

# Two workers, one test file each at a time (--dist loadfile keeps a file's module fixtures, the
# trained tiny models, in one process): most of a test's time is single-threaded tracing and
# start-up, so two processes on two cores take about 40% off the wall time (README, Tests).
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile tests

clean:
	rm -rf $(VENV) runs
