# Two commands on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
# stages call `python`; put the venv first so DVC runs them with its interpreter
export PATH := $(BIN):$(PATH)

.PHONY: repro test venv clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	touch $@

repro: venv
	$(BIN)/dvc repro

test: venv
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
