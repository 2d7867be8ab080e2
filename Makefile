# Each target installs what it needs on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fuzz bench conformance system-pg system-mysql system-sysbench system-bench clean

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

# MariaDB server and client (mariadbd, mariadb-install-db, mariadb, mariadb-slap).
system-mysql:
	@if ! { command -v mariadbd || test -x /usr/sbin/mariadbd; } >/dev/null 2>&1 \
		|| ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server mariadb-client; \
	fi

# sysbench drives MySQL through the proxy in the tests and the benchmark.
system-sysbench:
	@command -v sysbench >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q sysbench)

system-bench: system-pg system-mysql system-sysbench
	@command -v pgbouncer >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer)

demo: $(STAMP) system-pg
	$(BIN)/python -m sluice.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench conformance
	$(BIN)/mypy

test: $(STAMP) system-pg system-mysql system-sysbench lint
	$(BIN)/pytest -q

# Differential testing: SEEDS random programs per engine, run directly and through Sluice;
# each new kind of divergence is shrunk and saved under .sluice/differential/ for
# `python -m tests.differential.replay FILE`.
SEEDS ?= 20
fuzz: $(STAMP) system-pg system-mysql
	$(BIN)/python -m tests.differential.fuzz --seeds $(SEEDS)

bench: $(STAMP) system-bench
	$(BIN)/python -m bench.run

# The client libraries' own test suites, direct and through Sluice (not part of `test`):
# fetches their source archives with pip, rewrites docs/conformance.md.
conformance: $(STAMP) system-pg system-mysql
	$(BIN)/python -m conformance

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
