"""The three client libraries whose own test suites run through Sluice, and how to run each.

A `Suite` says which source archive holds the tests (pinned to the version the project's
clients are tested with), what to install next to it, which of its tests run and why
some are left out, what the database server needs for them, and how to point the suite's
own harness at an endpoint (a server or a Sluice listener):

- asyncpg: `asyncpg._testbase` uses a running server when PGHOST is set
  (PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE); tests that manage their own clusters
  skip themselves then.
- psycopg2: tests/testconfig.py reads PSYCOPG2_TESTDB, PSYCOPG2_TESTDB_HOST/_PORT/_USER/
  _PASSWORD. The psycopg2-binary wheel is what runs; the tests come from the psycopg2 sdist.
- mysql-connector-python: its own unittests.py with --use-external-server (it drops and
  creates the `myconnpy` database itself) and --skip-install (the installed wheel runs).
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("direct", "transaction", "session")


@dataclass(frozen=True)
class Endpoint:
    """Where a suite connects: a database server or a Sluice listener in front of it."""

    host: str
    port: int
    user: str
    password: str


@dataclass(frozen=True)
class Exclusion:
    """Test ids matching `pattern` (a regex searched in the id) do not run, because `reason`."""

    pattern: str
    reason: str


@dataclass(frozen=True)
class Suite:
    """One client library's test suite; subclasses say how its harness is configured."""

    name: str
    engine: str  # "postgresql" or "mysql"
    sdist: str  # the source archive holding the tests, as "project==version"
    requirements: tuple[str, ...]  # installed in the suites' virtualenv
    members: tuple[str, ...]  # archive paths (below its top folder) that are unpacked
    exclusions: tuple[Exclusion, ...]
    test_timeout: float  # seconds one test may take
    run_timeout: float  # seconds one run of the whole suite may take
    databases: tuple[str, ...] = ()  # created on the server before a run
    setup_sql: tuple[tuple[str, str], ...] = ()  # (database, SQL) run as superuser after
    notes: tuple[str, ...] = ()  # what cannot run in this environment, and why

    @property
    def folder(self) -> str:
        """Where its tests are unpacked, below the work folder's src/: e.g. asyncpg-0.30.0."""
        project, _, version = self.sdist.partition("==")
        return f"{project}-{version}"

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        """Environment variables that point the suite's harness at `endpoint`."""
        raise NotImplementedError

    def driver_args(self, endpoint: Endpoint) -> list[str]:
        """The driver's `--loader` and what follows `--`."""
        raise NotImplementedError


@dataclass(frozen=True)
class NamedModulesSuite(Suite):
    """A suite run by loading its test modules by name with unittest."""

    modules: tuple[str, ...] = ()

    def driver_args(self, endpoint: Endpoint) -> list[str]:
        return ["--loader", "names", "--", *self.modules]


@dataclass(frozen=True)
class AsyncpgSuite(NamedModulesSuite):
    database: str = "postgres"

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        return {
            "PGHOST": endpoint.host,
            "PGPORT": str(endpoint.port),
            "PGUSER": endpoint.user,
            "PGPASSWORD": endpoint.password,
            "PGDATABASE": self.database,
        }


@dataclass(frozen=True)
class Psycopg2Suite(NamedModulesSuite):
    database: str = "psycopg2_test"

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        return {
            "PSYCOPG2_TESTDB": self.database,
            "PSYCOPG2_TESTDB_HOST": endpoint.host,
            "PSYCOPG2_TESTDB_PORT": str(endpoint.port),
            "PSYCOPG2_TESTDB_USER": endpoint.user,
            "PSYCOPG2_TESTDB_PASSWORD": endpoint.password,
        }


@dataclass(frozen=True)
class MysqlConnectorSuite(Suite):
    def env(self, endpoint: Endpoint) -> dict[str, str]:
        return {}

    def driver_args(self, endpoint: Endpoint) -> list[str]:
        # The password goes on the suite's command line: the throwaway server's, random per run.
        return [
            "--loader",
            "mysql-connector",
            "--",
            "--use-external-server",
            "--skip-install",
            "--host",
            endpoint.host,
            "--port",
            str(endpoint.port),
            "--user",
            endpoint.user,
            "--password",
            endpoint.password,
        ]


_MANAGED_CLUSTER = (
    "starts PostgreSQL clusters of its own with initdb (hot standby pairs), which pg_ctl "
    "refuses to do as root; it never connects to the endpoint under test"
)

ASYNCPG = AsyncpgSuite(
    name="asyncpg",
    engine="postgresql",
    sdist="asyncpg==0.30.0",
    requirements=("asyncpg==0.30.0", "distro~=1.9.0"),
    members=("tests/",),
    exclusions=(Exclusion(r"^tests\.test_connect\.TestConnectionAttributes\.", _MANAGED_CLUSTER),),
    test_timeout=30.0,
    run_timeout=240.0,
    notes=(
        "Not run: `tests.test__sourcecode` (flake8 and mypy over asyncpg's source tree, "
        "which is not unpacked: the installed wheel is what runs).",
        'Skip themselves with PGHOST set ("unmanaged cluster", "using remote cluster"): '
        "tests that reconfigure or restart a cluster of their own: SSL and client "
        "certificates, connection loss through asyncpg's fuzzing proxy, large OIDs, "
        "target_session_attrs and hot standby.",
        "GSSAPI/Kerberos tests skip: k5test and a KDC are not installed here.",
    ),
    modules=(
        "tests.test__environment",
        "tests.test_adversity",
        "tests.test_cache_invalidation",
        "tests.test_cancellation",
        "tests.test_codecs",
        "tests.test_connect",
        "tests.test_copy",
        "tests.test_cursor",
        "tests.test_exceptions",
        "tests.test_execute",
        "tests.test_introspection",
        "tests.test_listeners",
        "tests.test_logging",
        "tests.test_pool",
        "tests.test_prepare",
        "tests.test_record",
        "tests.test_test",
        "tests.test_timeout",
        "tests.test_transaction",
        "tests.test_types",
        "tests.test_utils",
    ),
)

PSYCOPG2 = Psycopg2Suite(
    name="psycopg2",
    engine="postgresql",
    sdist="psycopg2==2.9.10",
    requirements=("psycopg2-binary==2.9.10",),
    members=("tests/",),
    exclusions=(),
    test_timeout=30.0,
    run_timeout=180.0,
    notes=(
        "Replication tests skip (no PSYCOPG2_TEST_REPL_DSN): Sluice refuses replication "
        "connections, so there is nothing to compare.",
        "`test_connection.ConnectionTests.test_pgconn_ptr` fails directly: it calls the "
        "system libpq through ctypes on the wheel's own libpq connection.",
    ),
    databases=("psycopg2_test",),
    # Its CI installs hstore in the test database; without it 9 tests skip.
    setup_sql=(("psycopg2_test", "CREATE EXTENSION hstore"),),
    modules=(
        "tests.test_async",
        "tests.test_bugX000",
        "tests.test_bug_gc",
        "tests.test_cancel",
        "tests.test_connection",
        "tests.test_copy",
        "tests.test_cursor",
        "tests.test_dates",
        "tests.test_errcodes",
        "tests.test_errors",
        "tests.test_extras_dictcursor",
        "tests.test_fast_executemany",
        "tests.test_green",
        "tests.test_ipaddress",
        "tests.test_lobject",
        "tests.test_module",
        "tests.test_notify",
        "tests.test_psycopg2_dbapi20",
        "tests.test_quote",
        "tests.test_replication",
        "tests.test_sql",
        "tests.test_transaction",
        "tests.test_types_basic",
        "tests.test_types_extras",
        "tests.test_with",
    ),
)

MYSQL_CONNECTOR = MysqlConnectorSuite(
    name="mysql-connector-python",
    engine="mysql",
    sdist="mysql-connector-python==9.4.0",
    requirements=("mysql-connector-python==9.4.0",),
    # examples/: test_examples runs them. cpydist and version.py: tests/__init__.py imports
    # cpydist, which reads the version.
    # The rest of lib/ (the connector's own sources) stays packed: the wheel must run.
    members=("tests/", "examples/", "unittests.py", "cpydist/", "lib/mysql/connector/version.py"),
    exclusions=(
        Exclusion(
            r"^tests\.qa\.test_qa(_aio)?_timeout\.",
            "the client's own read/write timers (9.3's read_timeout/write_timeout) against "
            "SELECT SLEEP(): 200 s of sleeping, more than the rest of the suite, for no "
            "exchange that other tests lack",
        ),
        Exclusion(
            r"^tests\.test_bugs\.BugOra25558885\.",
            "two SELECT SLEEP(15) queries (30 s) checking that the C extension does not lose "
            "a connection during a long query; BugOra20653441 (KILL QUERY of a long query) "
            "and the cursor tests keep long and cancelled queries covered",
        ),
        Exclusion(
            r"^tests\.test_bugs\.BugOra13435186\.",
            "a memory-leak check of the client (object counts over 100 connections), "
            "CPU-bound in the client: 20 to 27 s on this machine, near the per-test timeout",
        ),
        Exclusion(r"^tests\.otel\.", "OpenTelemetry instrumentation, not installed (all skip)"),
    ),
    test_timeout=20.0,
    run_timeout=600.0,
    notes=(
        "The suite is written for MySQL 8/9: against MariaDB 10.11 some tests fail in "
        "every mode, most for MySQL-only features (the VECTOR type and the mysql.component "
        "table, query attributes, utf8mb4_0900 collations). They are not counted against "
        "Sluice.",
        'Tests marked "not available for external MySQL servers" skip: they restart or '
        "reconfigure the server that the harness would otherwise start itself.",
        "Authentication plugin tests (Kerberos, LDAP SASL, OCI, OpenID Connect, WebAuthn, "
        "multi-factor) skip: they need those services and server plugins.",
        "`tests/data/qa/multi_statement/*.sql` are missing from the source archive: those "
        "tests error in every mode.",
    ),
)

SUITES: tuple[Suite, ...] = (ASYNCPG, PSYCOPG2, MYSQL_CONNECTOR)
