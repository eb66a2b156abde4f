# The two set-up commands of a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export OPSLEDGER_HOME ?= $(CURDIR)/.opsledger

.PHONY: install run test lint bench soak clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/opsledger db upgrade
	@if [ ! -f $(OPSLEDGER_HOME)/demo-loaded ]; then \
		$(BIN)/opsledger demo && touch $(OPSLEDGER_HOME)/demo-loaded; \
	else echo "demo already loaded (rm $(OPSLEDGER_HOME)/demo-loaded to load it again)"; fi
	@token=$$($(BIN)/opsledger keys create --name make-run --scope read --replace 2>/dev/null) && \
		echo "" && \
		echo "opsledger on http://$(HOST):$(PORT)  (OpenAPI: http://$(HOST):$(PORT)/openapi.json)" && \
		echo "read key: $$token" && \
		echo "try: curl -H 'Authorization: Bearer $$token' 'http://$(HOST):$(PORT)/v1/events?limit=5'" && \
		echo ""
	$(BIN)/opsledger serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_projection.py
	$(BIN)/python benchmarks/bench_forecast.py
	$(BIN)/python benchmarks/bench_report.py

# The load and soak benchmark: 10 minutes on SQLite, then 10 on PostgreSQL (about 25 in all).
soak: install
	$(BIN)/python benchmarks/bench_load.py --duration 600

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
