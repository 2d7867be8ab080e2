# Each target installs what it needs on a fresh Debian machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-compiled test-pure compiled lint fuzz bench conformance system-pg system-mysql system-sysbench system-bench clean

# The editable install builds the library preloaded into function environments (setup.py):
# rebuilt when its C source changes.
$(STAMP): pyproject.toml setup.py src/sluice/functions/source_address.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The compiled build (setup.py: the relay's per-message modules through mypyc and the C
# compiler), installed as a whole package into its own directory: src/ never holds a
# compiled module, so an edited source is never shadowed by a stale one. Rebuilt
# whenever a source changes; PYTHONPATH=$(COMPILED) runs it.
COMPILED := .build/compiled
SOURCES := $(shell find src -name '*.py' -o -name '*.c') setup.py pyproject.toml
$(COMPILED)/.built: $(STAMP) $(SOURCES)
	rm -rf $(COMPILED) build/lib.*  # (setuptools would ship what an earlier build left there)
	$(BIN)/pip install -q --no-deps --target $(COMPILED) .
	touch $@

compiled: $(COMPILED)/.built

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

demo: $(STAMP) system-pg system-mysql
	$(BIN)/python -m sluice.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench conformance
	$(BIN)/mypy

# The whole suite against the compiled build (SLUICE_COMPILED=1: a test checks that the
# hot modules really are compiled), then the codec-level tests, the wire fuzzing
# included, against the interpreted sources too.
test: test-compiled test-pure

test-compiled: $(COMPILED)/.built $(STAMP) system-pg system-mysql system-sysbench lint
	SLUICE_COMPILED=1 PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/pytest -q --durations=25

test-pure: $(STAMP) system-pg system-mysql lint
	SLUICE_COMPILED=0 PYTHONPATH=$(CURDIR)/src $(BIN)/pytest -q tests/unit tests/integration/test_fuzz_wire.py

# Differential testing: SEEDS random programs per engine, run directly and through Sluice;
# each new kind of divergence is shrunk and saved under .sluice/differential/ for
# `python -m tests.differential.replay FILE`.
SEEDS ?= 20
fuzz: $(STAMP) system-pg system-mysql
	$(BIN)/python -m tests.differential.fuzz --seeds $(SEEDS)

# The proxy measured is the compiled build, as `pip install .` makes it.
bench: $(STAMP) $(COMPILED)/.built system-bench
	PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/python -m bench.run

# The client libraries' own test suites, direct and through Sluice (not part of `test`):
# fetches their source archives with pip, rewrites docs/conformance.md.
conformance: $(STAMP) system-pg system-mysql
	$(BIN)/python -m conformance

clean:
	rm -rf $(VENV) .build build .pytest_cache .mypy_cache .ruff_cache
	rm -f src/sluice/functions/_source_address*.so
