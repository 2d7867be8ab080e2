# Each target installs what it needs on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench system-pg system-bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# PostgreSQL server binaries (initdb, postgres, psql, pgbench) for the throwaway servers.
system-pg:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v pgbench >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql postgresql-contrib; \
	fi

system-bench: system-pg
	@command -v pgbouncer >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer)

demo: $(STAMP) system-pg
	$(BIN)/python -m sluice.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: $(STAMP) system-pg lint
	$(BIN)/pytest -q

bench: $(STAMP) system-bench
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
