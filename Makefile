# Two commands on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
LOCK_VENV ?= .venv-lock
PIP_TOOLS := pip-tools==7.7.0
# requirements.lock: requirements.txt's ranges resolved to exact versions, each with its hashes
COMPILE := $(LOCK_VENV)/bin/pip-compile --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --output-file requirements.lock requirements.txt
# stages call `python`; put the venv first so DVC runs them with its interpreter
export PATH := $(BIN):$(PATH)
export CUSTOM_COMPILE_COMMAND := make lock

.PHONY: repro test venv clean-venv lock upgrade

venv: $(VENV)/.installed

# the exact versions of the lock (hash-checked), then the project itself
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $@

repro: venv
	$(BIN)/dvc repro

test: venv
	$(BIN)/python -m pytest

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install $(PIP_TOOLS)

# requirements.txt changed: pin what it adds, keep every other version of the lock
lock: $(LOCK_VENV)/bin/pip-compile
	$(COMPILE)

# move every package to the newest release requirements.txt allows (then: make test, and the
# golden checks of tests/test_golden.py say whether an output changed)
upgrade: $(LOCK_VENV)/bin/pip-compile
	$(COMPILE) --upgrade

clean-venv:
	rm -rf $(VENV) $(LOCK_VENV)
