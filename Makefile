# One command each: `make setup`, `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test lint

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev,ner,zh]"

demo:
	$(BIN)/ernie-kg demo

test:
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check .
