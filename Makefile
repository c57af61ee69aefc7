# Two commands on a fresh machine: `make run` (set up and start the bot), `make test` (set up and test).
# `make install` is run's set-up step alone (what an update needs before the service restarts).
PYTHON ?= python3
# This machine's own settings (TORCH_SPEC, TORCH_INDEX_URL), kept out of git: every make here reads them.
-include local.mk
VENV := .venv
BIN := $(VENV)/bin
# torch is installed here only, before requirements.txt (which does not pin it). TORCH_SPEC picks the version;
# TORCH_INDEX_URL, when set, is the wheel index torch comes from: the PyTorch wheel index for a CUDA release
# (cu12x, cu13x) or for the CPU build. Other packages still come from pip's usual index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
# One stamp per (spec, index): changing either leaves no stamp, so torch is installed again.
TORCH_STAMP := $(BIN)/.torch-$(shell printf '%s' '$(TORCH_SPEC) $(TORCH_INDEX_URL)' | cksum | cut -d' ' -f1)

.PHONY: run install test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# pip counts torch==X as installed whatever its build (+cpu, +cu12x): the old one goes first, so the new
# spec or index really takes effect.
$(TORCH_STAMP): | $(BIN)/python
	rm -f $(BIN)/.torch-*
	$(BIN)/pip uninstall -qq -y torch
	$(BIN)/pip install -q $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)",) "$(TORCH_SPEC)"
	touch $@

# The project itself goes in editable (the `imagine-bot` command; the code stays where it is), built with the
# venv's own setuptools so that a later re-install needs no network.
$(BIN)/.installed: $(TORCH_STAMP) requirements.txt pyproject.toml
	$(BIN)/pip install -q -r requirements.txt "setuptools>=64"
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/python -m bot $(if $(CONFIG),--config $(CONFIG),)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check bot generation tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# Branch coverage of bot/ and generation/ (subprocesses included); the report names uncovered lines. CI, where
# PostgreSQL and Redis always answer, holds 92 (.ci/run). Without them their tests skip, and the code only they
# reach (the Redis cluster, PostgreSQL storage) counts as uncovered: hence the lower default on a laptop.
COVERAGE_FLOOR ?= 90

test: $(BIN)/.installed-dev lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q --cov --cov-report=term-missing:skip-covered \
		--cov-fail-under=$(COVERAGE_FLOOR)

bench: $(BIN)/.installed-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.executor_overhead
	$(BIN)/python -m bench.scheduler_sim

clean:
	rm -rf $(VENV)
