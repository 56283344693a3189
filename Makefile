# Two commands for everyone: `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Keep glibc malloc from returning large blocks to the system: otherwise every big CPU tensor allocation
# page-faults anew (measured in experiments/bench_train.py; see README "Performance").
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
export WANDB_SILENT ?= true

.PHONY: venv train test lint format bench clean-venv

$(STAMP): requirements/cpu.txt requirements/dev.txt setup.py setup.cfg $(wildcard ops/csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade-strategy only-if-needed -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) experiments/train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) experiments/bench_ops.py
	$(PY) experiments/bench_train.py

clean-venv:
	rm -rf $(VENV)
