# Same commands locally and in CI. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo console test test-unit lint chaos bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

demo: $(STAMP) ## Run a real backfill end to end (embedded Postgres/Redis and stand-in LLM when unset)
	$(VENV)/bin/backfill demo

console: $(STAMP) ## Everything the demo starts plus the API: prints the operator console's URL and an admin key, runs until Enter
	$(PY) -m scheduler.dev.console

test: $(STAMP) ## Unit and integration tests (real Postgres, Redis, Celery worker, stand-in over HTTP)
	$(PY) -m pytest

test-unit: $(STAMP) ## Unit tests only (no services)
	$(PY) -m pytest tests/unit

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared worker scheduler

chaos: $(STAMP) ## Faults on real processes (kill, flush, restart, LLM errors): nothing lost or doubled
	$(PY) -m chaos

BENCH ?= all
bench: $(STAMP) ## CLI start-up, filters on 1M sessions, pipeline (a)-(e), change report and revert on 1M runs, spend; BENCH=cli|filters|pipeline|report|spend for one (~30 min)
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = cli ]; then $(PY) -m bench.cli_bench; fi
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = filters ]; then $(PY) -m bench.filters_bench; fi
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = pipeline ]; then $(PY) -m bench.pipeline_bench; fi
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = report ]; then $(PY) -m bench.report_bench; fi
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = spend ]; then $(PY) -m bench.spend_bench; fi

clean: ## Stop embedded servers and remove .run/
	-$(PY) -c "from pathlib import Path; from scheduler.dev.embedded import stop_embedded; stop_embedded(Path('.run'))"
	rm -rf .run
