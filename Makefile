# Two commands on a fresh machine: `make run` (set up and start the bot), `make test` (set up and test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch for CI and CPU machines; GPU users: TORCH_SPEC="torch==2.13.0" installs the default (CUDA) build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test lint typecheck bench clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

run: $(BIN)/.installed
	$(BIN)/python -m bot $(if $(CONFIG),--config $(CONFIG),)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check bot generation tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# Branch coverage of bot/ and generation/ (subprocesses included); the report names uncovered lines.
COVERAGE_FLOOR ?= 92

test: $(BIN)/.installed-dev lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q --cov --cov-report=term-missing:skip-covered \
		--cov-fail-under=$(COVERAGE_FLOOR)

bench: $(BIN)/.installed-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.executor_overhead
	$(BIN)/python -m bench.scheduler_sim

clean:
	rm -rf $(VENV)
