# The README's two commands: `make train` (the main job) and `make test` (the suite).
# Both set up everything first: Debian's Fashion-MNIST package and a virtualenv with the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IDX_DIR := /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/default
# Use sudo only when not root (CI and these machines run as root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data train test clean

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

test: setup
	$(BIN)/python -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) runs
