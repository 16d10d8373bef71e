# PickMyClass: `make run` starts the whole system, `make test` checks it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing PickMyClass with its development tools"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	@$(BIN)/python -m devtools.run

lint: install
	@echo "==> ruff"
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@echo "==> mypy"
	@$(BIN)/mypy

format: install
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

# Servers: the standard local ports, TEST_*_URL, or embedded ones the test session starts itself.
test: lint
	@$(BIN)/python -m devtools.prepare_tests
	@echo "==> pytest (unit, integration on real NATS/PostgreSQL/Redis, end to end)"
	@$(BIN)/pytest

bench: install
	@$(BIN)/python -m bench.pipeline

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
