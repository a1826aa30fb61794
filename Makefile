# Two commands on a fresh machine: `make demo`, `make test` (each sets up .venv first
# when it is missing or older than pyproject.toml / setup.py); `make setup` on its own
# (re)installs. TORCH_PIP_ARGS goes to torch's install: where pip would pick PyPI's CUDA
# build, TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" gets the CPU one.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
INSTALLED = $(VENV)/.ernie-kg-installed

.PHONY: setup demo test lint

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -e ".[dev,ner,zh]"
	touch $(INSTALLED)

$(INSTALLED): pyproject.toml setup.py
	$(MAKE) setup

demo: $(INSTALLED)
	$(BIN)/ernie-kg demo

test: $(INSTALLED)
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
