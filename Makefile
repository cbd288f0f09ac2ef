# One command per job; the same locally and in CI.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev test check bench-engine bench-rules bench proof install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)  ## run Quasar on the embedded broker with the examples loaded
	$(VENV)/bin/quasar dev

test: $(STAMP)  ## the whole test suite (starts its own broker; needs local Redis/PostgreSQL)
	$(VENV)/bin/pytest -q

check: $(STAMP)  ## lint and type-check (strict on app/engine)
	$(VENV)/bin/ruff check app tests bench ops
	$(VENV)/bin/ruff format --check app tests bench ops
	$(VENV)/bin/mypy app

bench-engine: $(STAMP)  ## engine msgs/s vs Orion's engine (dataflow-wasm under node), same run
	$(PY) -m bench.engine

bench-rules: $(STAMP)  ## 50-row table and 5-step ruleset per message, next to the complex-workflow row
	$(PY) -m bench.rules

bench: $(STAMP)  ## every benchmark in one go, one table (+ bench/results/latest.json)
	$(PY) -m bench.run_all

proof: $(STAMP)  ## long fault scenarios (100k-message worker kill ...): bench/results/faults.{json,md}
	$(PY) -m bench.faults

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
