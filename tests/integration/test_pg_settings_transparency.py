"""Session settings through Sluice are what the same client sees connected directly.

Every test runs the same steps twice: straight against the server, then through
a Sluice whose pool has one connection, with a second client (other settings)
using that connection between the steps, so each step of the first client runs
on a connection that has just served someone else and had its settings
replayed. The observations (values the server shows, ParameterStatus values the
driver holds, errors) must be equal. DISCARD ALL pins its client, so the tests
that send it get a pool of two connections (the second client needs one).
Those two Sluices serve the whole module: their connections have served the
tests before too, which is what a pool's connections do.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import ClientCursor, errors

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn, free_port, proxy_config
from rawpg import RawClient
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.wire.pg import messages as m

StartSluice = Callable[..., SluiceProcess]
Conn = psycopg.Connection[tuple[Any, ...]]
Steps = Callable[[Conn, Conn], list[Any]]

ONE_CONNECTION = {"max_connections": 1, "borrow_timeout": 20}
TWO_CONNECTIONS = {"max_connections": 2, "borrow_timeout": 20}
# The second client: settings of its own, so its turns change the shared connection.
OTHER = {"application_name": "other", "options": "-c TimeZone=UTC -c DateStyle=Postgres,YMD"}
REPORTED = ("TimeZone", "DateStyle", "application_name", "client_encoding", "IntervalStyle")
SHOWN = (
    "select current_setting('timezone'), current_setting('datestyle'),"
    " current_setting('application_name'), current_setting('search_path'),"
    " current_setting('statement_timeout'), current_setting('client_encoding')"
)


def scalar(conn: Conn, sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def row(conn: Conn, sql: str) -> tuple[Any, ...]:
    found = conn.execute(sql).fetchone()
    assert found is not None
    return tuple(found)


def reported(conn: Conn) -> dict[str, str | None]:
    """The ParameterStatus values the driver holds."""
    return {name: conn.info.parameter_status(name) for name in REPORTED}


def view(conn: Conn) -> list[Any]:
    """What a client can see of its settings: shown by the server and reported to it."""
    return [row(conn, SHOWN), reported(conn)]


def turn(other: Conn) -> tuple[Any, ...]:
    """The second client uses the shared connection (through Sluice: the only one) and
    shows its own settings (nothing of the first client's may reach it)."""
    return row(other, SHOWN)


class Endpoints:
    """Where to connect: straight to the server, or through a one-connection Sluice."""

    def __init__(self, pg: PgCluster, proc: SluiceProcess) -> None:
        self.pg = pg
        self.proc = proc
        self.log_start = len(proc.log_text())

    def log(self) -> str:
        """What the Sluice logged since these endpoints were made (in this test)."""
        return self.proc.log_text()[self.log_start :]

    def dsn(self, direct: bool) -> str:
        if direct:
            return self.pg.dsn(APP_USER, APP_PASSWORD, APP_DB)
        return dsn(self.proc)

    def host_port(self, direct: bool) -> tuple[str, int]:
        if direct:
            return self.pg.host, self.pg.port
        host, _, port = str(self.proc.proxies[0]["listen"]).rpartition(":")
        return host, int(port)

    @contextmanager
    def pair(self, direct: bool, **startup: Any) -> Iterator[tuple[Conn, Conn]]:
        with (
            psycopg.connect(self.dsn(direct), autocommit=True, **startup) as conn,
            psycopg.connect(self.dsn(direct), autocommit=True, **OTHER) as other,
        ):
            yield conn, other

    def both(self, steps: Steps, **startup: Any) -> tuple[list[Any], list[Any]]:
        """(direct observations, observations through Sluice)."""
        seen = []
        for direct in (True, False):
            with self.pair(direct, **startup) as (conn, other):
                seen.append(steps(conn, other))
        return seen[0], seen[1]


def _shared_sluice(pg: PgCluster, pool: dict[str, Any]) -> Iterator[SluiceProcess]:
    with SluiceProcess([proxy_config(pg, free_port(), pool=pool)]) as proc:
        yield proc


@pytest.fixture(scope="module")
def one_connection(pg: PgCluster) -> Iterator[SluiceProcess]:
    yield from _shared_sluice(pg, ONE_CONNECTION)


@pytest.fixture(scope="module")
def two_connections(pg: PgCluster) -> Iterator[SluiceProcess]:
    yield from _shared_sluice(pg, TWO_CONNECTIONS)


def _endpoints(pg: PgCluster, proc: SluiceProcess) -> Iterator[Endpoints]:
    ends = Endpoints(pg, proc)
    yield ends
    print(f"---- sluice log in this test ({proc.workdir}) ----\n{ends.log()[-8000:]}")


@pytest.fixture
def ends(one_connection: SluiceProcess, pg: PgCluster) -> Iterator[Endpoints]:
    yield from _endpoints(pg, one_connection)


@pytest.fixture
def ends2(two_connections: SluiceProcess, pg: PgCluster) -> Iterator[Endpoints]:
    yield from _endpoints(pg, two_connections)


def assert_same(results: tuple[list[Any], list[Any]]) -> None:
    direct, through = results
    assert through == direct


# ------------------------------------------------- 6: RESET gives the startup value

START = {
    "application_name": "start_app",
    "options": "-c TimeZone=Asia/Tokyo -c DateStyle=SQL,DMY -c statement_timeout=3000",
}
CHANGE = (
    "SET timezone = 'Europe/Rome'",
    "SET datestyle = 'German'",
    "SET application_name = 'changed'",
    "SET statement_timeout = 100",
)
RESETS = {
    "RESET ALL": ["RESET ALL"],
    "DISCARD ALL": ["DISCARD ALL"],
    "RESET name": ["RESET timezone", "RESET datestyle", "RESET application_name",
                   "RESET statement_timeout"],
    "SET name TO DEFAULT": ["SET timezone TO DEFAULT", "SET datestyle = DEFAULT",
                            "SET application_name TO DEFAULT", "SET statement_timeout TO DEFAULT"],
    "one query": ["RESET timezone; SET TIME ZONE DEFAULT; RESET ALL; SELECT 1"],
}  # fmt: skip


def _reset_steps(resets: list[str], extended: bool) -> Steps:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        for sql in CHANGE:
            conn.execute(sql)
        seen = view(conn)
        seen.append(turn(other))
        for sql in resets:
            conn.cursor().execute(sql, binary=extended)  # binary: the extended protocol
        seen += view(conn)
        seen.append(turn(other))
        return [*seen, *view(conn)]

    return steps


RESET_CASES = [(reset, False) for reset in RESETS] + [
    (reset, True)
    for reset in RESETS
    if reset != "one query"  # extended: one statement each
]


@pytest.mark.parametrize(
    ("reset", "extended"),
    RESET_CASES,
    ids=[f"{reset}, {'extended' if extended else 'simple'}" for reset, extended in RESET_CASES],
)
def test_reset_gives_back_startup_values(
    ends: Endpoints, ends2: Endpoints, reset: str, extended: bool
) -> None:
    where = ends2 if reset == "DISCARD ALL" else ends
    assert_same(where.both(_reset_steps(RESETS[reset], extended), **START))


@pytest.mark.parametrize(
    "reset", ["RESET client_encoding", "RESET ALL", "DISCARD ALL", "SET NAMES DEFAULT"]
)
def test_text_after_reset_is_not_corrupted(ends: Endpoints, ends2: Endpoints, reset: str) -> None:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        conn.execute(reset)
        text = "caf\u00e9 \u00e0 la cr\u00e8me"
        return [
            turn(other),
            conn.info.encoding,
            scalar(conn, "select octet_length(%s::text)", (text,)),
            scalar(conn, "select %s::text = 'caf' || chr(233) || ' ' || chr(224) || ' la cr'"
                   " || chr(232) || 'me'", (text,)),
        ]  # fmt: skip

    where = ends2 if reset == "DISCARD ALL" else ends
    results = where.both(steps, client_encoding="LATIN1")
    assert results[0][1] == "iso8859-1"
    assert_same(results)


def test_reset_inside_transaction_then_rollback(ends: Endpoints) -> None:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        conn.execute("SET timezone = 'Europe/Rome'")
        with conn.transaction(force_rollback=True):
            conn.execute("RESET ALL")
            seen = view(conn)
        seen += view(conn)
        seen.append(turn(other))
        with conn.transaction():
            conn.execute("RESET timezone")
            seen += view(conn)
        seen.append(turn(other))
        return [*seen, *view(conn)]

    assert_same(ends.both(steps, **START))


def test_asyncpg_reset_reports_startup_values(ends2: Endpoints) -> None:
    ends = ends2  # DISCARD ALL pins
    settings = {"TimeZone": "Asia/Tokyo", "DateStyle": "SQL, DMY", "application_name": "apg"}

    async def run(direct: bool) -> list[Any]:
        host, port = ends.host_port(direct)
        conn = await apg_connect(host, port, settings)
        other = await apg_connect(host, port, {"application_name": "other", "TimeZone": "UTC"})
        seen: list[Any] = []
        try:
            for reset in ("RESET ALL", "DISCARD ALL", "SET TIME ZONE DEFAULT"):
                await conn.execute("SET timezone = 'Europe/Rome'; SET datestyle = 'German'")
                await other.fetchval("select 1")
                await conn.execute(reset)
                params = conn.get_settings()
                seen.append([params.TimeZone, params.DateStyle, params.application_name])
                seen.append(await conn.fetchrow("select current_setting('timezone'),"
                                                " current_setting('datestyle')"))  # fmt: skip
                await other.fetchval("select 1")
                seen.append(await conn.fetchval("show timezone"))
        finally:
            await conn.close()
            await other.close()
        return seen

    async def both() -> tuple[list[Any], list[Any]]:
        async with asyncio.timeout(60):
            return await run(True), await run(False)

    assert_same(asyncio.run(both()))


async def apg_connect(host: str, port: int, settings: dict[str, str]) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=host,
        port=port,
        user=APP_USER,
        password=APP_PASSWORD,
        database=APP_DB,
        ssl=False,
        timeout=20,
        server_settings=settings,
        statement_cache_size=0,  # DISCARD ALL drops named statements, directly too
    )


# ----------------------------------------- 7: ROLLBACK TO SAVEPOINT undoes a SET


@pytest.fixture
def schemas(pg: PgCluster) -> None:
    """Two schemas with a table of the same name: search_path decides which is read."""
    pg.psql(
        "DROP SCHEMA IF EXISTS sp_right, sp_wrong CASCADE;"
        "CREATE SCHEMA sp_right; CREATE SCHEMA sp_wrong;"
        "CREATE TABLE sp_right.t AS SELECT 'right' AS v;"
        "CREATE TABLE sp_wrong.t AS SELECT 'wrong' AS v;"
        f"GRANT USAGE ON SCHEMA sp_right, sp_wrong TO {APP_USER};"
        f"GRANT SELECT ON ALL TABLES IN SCHEMA sp_right, sp_wrong TO {APP_USER}",
        db=APP_DB,
    )


SAVEPOINT_PLANS = {
    "driver savepoint": None,  # psycopg's nested transaction() rolled back
    "quoted name": ['SAVEPOINT "Sp"', "SET search_path = sp_wrong", 'ROLLBACK TO SAVEPOINT "Sp"'],
    "folded name": ["SAVEPOINT Foo", "SET search_path = sp_wrong", "ROLLBACK TO foo"],
    "nested": ["SAVEPOINT a", "SET search_path = sp_wrong", "SAVEPOINT b", "RESET search_path",
               "ROLLBACK TO SAVEPOINT b", "RELEASE b", "ROLLBACK WORK TO a"],
    "released then rolled back": ["SAVEPOINT a", "SAVEPOINT b", "SET search_path = sp_wrong",
                                  "RELEASE SAVEPOINT b", "ROLLBACK TO SAVEPOINT a"],
    "one query": ["SAVEPOINT x; SET search_path = sp_wrong; ROLLBACK TO SAVEPOINT x; SELECT 1"],
    "kept": ["SAVEPOINT a", "SET search_path = sp_wrong", "RELEASE a"],
    "rolled back and chained": ["SET search_path = sp_wrong", "ROLLBACK AND CHAIN"],
}  # fmt: skip


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize("plan", SAVEPOINT_PLANS, ids=list(SAVEPOINT_PLANS))
def test_set_undone_by_rollback_to_savepoint(ends: Endpoints, plan: str) -> None:
    statements = SAVEPOINT_PLANS[plan]

    def steps(conn: Conn, other: Conn) -> list[Any]:
        conn.execute("SET search_path = sp_right")
        with conn.transaction():
            conn.execute("SET search_path = sp_right, pg_catalog")
            if statements is None:
                with conn.transaction(force_rollback=True):
                    conn.execute("SET search_path = sp_wrong")
            for sql in statements or ():
                conn.execute(sql)
            seen = [scalar(conn, "select v from t")]
        for _ in range(2):
            seen.append(turn(other))
            seen.append(scalar(conn, "select v from t"))
        return seen

    assert_same(ends.both(steps))


# --------------------------------------------------- 8: replay that cannot fail


def test_set_time_zone_interval_is_replayed(ends: Endpoints) -> None:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        conn.execute("SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE")
        conn.execute("SET application_name = 'after the interval'")
        conn.execute("SET search_path = pg_catalog, public")
        seen = view(conn)
        for _ in range(2):
            seen.append(turn(other))
            seen += view(conn)
        return seen

    assert_same(ends.both(steps))


INVALID_STARTUP = {
    "DateStyle": {"server_settings": {"DateStyle": "garbage"}},
    "options": {"server_settings": {"options": "-c statement_timeout=abc"}},
    "unknown name": {"server_settings": {"no_such_setting": "1"}},
    "read-only": {"server_settings": {"server_version": "1"}},
}


@pytest.mark.parametrize("case", INVALID_STARTUP, ids=list(INVALID_STARTUP))
def test_invalid_startup_setting_is_refused_at_login(ends: Endpoints, case: str) -> None:
    async def login(direct: bool) -> tuple[str, str, str]:
        host, port = ends.host_port(direct)
        try:
            conn = await asyncpg.connect(host=host, port=port, user=APP_USER,
                                         password=APP_PASSWORD, database=APP_DB, ssl=False,
                                         timeout=20, **INVALID_STARTUP[case])  # fmt: skip
        except asyncpg.PostgresError as exc:
            return type(exc).__name__, exc.sqlstate, str(exc)
        await conn.close()
        return "", "", "logged in"

    async def both() -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        return await login(True), await login(False)

    direct, through = asyncio.run(both())
    assert direct[1] and through == direct


def test_known_startup_settings_cost_no_round_trip(
    start_sluice: StartSluice, tmp_path: Any
) -> None:
    """pgbench -C logs in for every transaction with the same settings: checked once."""
    proc = start_sluice(pool=ONE_CONNECTION)
    script = tmp_path / "select.sql"
    script.write_text("select current_setting('application_name');\n")
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run(
        ["pgbench", "-h", host, "-p", port, "-U", APP_USER, "-n", "-C", "-c", "2", "-t", "25",
         "-f", str(script), APP_DB],
        env={**env, "PGPASSWORD": APP_PASSWORD}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "number of transactions actually processed: 50/50" in done.stdout
    checks = [line for line in proc.log_text().splitlines() if "checking startup settings" in line]
    assert len(checks) == 1, checks
    assert checks[0].endswith("checking startup settings application_name")


def test_invalid_options_refused_by_psycopg(ends: Endpoints) -> None:
    messages = []
    for direct in (True, False):
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(ends.dsn(direct), options="-c DateStyle=garbage")
        messages.append(str(info.value).split("FATAL:", 1)[1].strip())
    assert messages[1] == messages[0]


def test_failed_replay_is_not_silent(start_sluice: StartSluice, pg: PgCluster) -> None:
    """A replay the server refuses closes that connection and the client gets an error."""
    guard = f"CREATE TABLE replay_guard (x int); GRANT SELECT ON replay_guard TO {APP_USER}"
    pg.psql(guard, db=APP_DB)
    proc = start_sluice(pool={**ONE_CONNECTION, "init_query": "SELECT count(*) FROM replay_guard"})
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SET timezone = 'Asia/Tokyo'; SELECT 1/0")  # leaves the server unknown
        pg.psql("DROP TABLE replay_guard", db=APP_DB)
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("select 1")  # the replay runs the init query again: it fails
        assert "could not restore this session's settings" in str(info.value)
        assert '42P01: relation "replay_guard" does not exist' in str(info.value)
    assert "replaying a client's session settings failed" in proc.log_text()
    pg.psql(guard, db=APP_DB)
    with psycopg.connect(dsn(proc), autocommit=True) as fresh:  # the pool has its slot back
        assert scalar(fresh, "select 1") == 1
    pg.psql("DROP TABLE replay_guard", db=APP_DB)


# ------------------------------------------- 9: startup options survive a reset


OPTIONS = {
    "options": "-c statement_timeout=3000 -c search_path=pg_catalog,public "
    "--TimeZone=Asia/Tokyo -capplication_name=my\\ app --lock-timeout=1500 -c work_mem=8MB",
}
UNTRACKED = "select current_setting('lock_timeout'), current_setting('work_mem')"


@pytest.mark.parametrize(
    "reset",
    ["DISCARD ALL", "RESET ALL", "RESET statement_timeout", "RESET work_mem",
     "SET work_mem TO DEFAULT"],
)  # fmt: skip
def test_startup_options_survive_reset(ends: Endpoints, ends2: Endpoints, reset: str) -> None:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        seen = [*view(conn), row(conn, UNTRACKED)]
        conn.execute("SET statement_timeout = 0; SET search_path = public")
        conn.execute(reset)
        seen += [*view(conn), row(conn, UNTRACKED)]
        seen.append(turn(other))
        return [*seen, *view(conn), row(conn, UNTRACKED)]

    results = (ends2 if reset == "DISCARD ALL" else ends).both(steps, **OPTIONS)
    assert results[0][0][4] == "3s"
    assert_same(results)


# -------------------------------------------- 11: custom settings do not leak


def test_custom_setting_does_not_reach_the_next_client(ends: Endpoints) -> None:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        conn.execute("SET myapp.user_id = '42'")
        seen: list[Any] = [scalar(conn, "show myapp.user_id")]
        conn.close()
        with pytest.raises(errors.UndefinedObject) as info:
            other.execute("show myapp.user_id")
        seen.append(info.value.sqlstate)
        with other.transaction():  # the error aborts a transaction: nothing is committed
            other.execute("create table if not exists custom_rows (x int)")
        try:
            with other.transaction():
                other.execute("insert into custom_rows values (1)")
                other.execute("select current_setting('myapp.user_id')")
        except errors.UndefinedObject:
            pass
        seen.append(scalar(other, "select count(*) from custom_rows"))
        other.execute("drop table custom_rows")
        return seen

    assert_same(ends.both(steps))
    assert "custom setting myapp.user_id" in ends.log()


@pytest.mark.parametrize(
    "sql",
    [
        "SET LOCAL myapp.role = 'admin'",
        "SELECT set_config('request.jwt.claims', '{\"sub\": 1}', true)",
    ],
)
def test_transaction_scoped_custom_setting_does_not_leak(ends: Endpoints, sql: str) -> None:
    name = sql.split("'")[1] if "set_config" in sql else sql.split()[-3 if "=" in sql else -1]

    def steps(conn: Conn, other: Conn) -> list[Any]:
        with conn.transaction():
            conn.execute(sql)
        seen: list[Any] = [turn(other)]
        try:
            return [*seen, scalar(other, f"show {name}")]
        except errors.UndefinedObject as exc:
            return [*seen, exc.sqlstate]

    assert_same(ends.both(steps))


# ---------------------------------- 14: greeting values are the server's own


STARTUP_SPELLINGS = {
    "DateStyle": {"options": "-c DateStyle=SQL,DMY"},
    "client_encoding": {"client_encoding": "latin-1"},
    "IntervalStyle": {"options": "-c IntervalStyle=SQL_STANDARD"},
    "TimeZone": {"options": "-c TimeZone=asia/tokyo"},
}


@pytest.mark.parametrize("case", STARTUP_SPELLINGS, ids=list(STARTUP_SPELLINGS))
def test_greeting_reports_values_as_the_server_shows_them(ends: Endpoints, case: str) -> None:
    def steps(conn: Conn, other: Conn) -> list[Any]:
        return [reported(conn)]

    assert_same(ends.both(steps, **STARTUP_SPELLINGS[case]))


def test_partial_datestyle_completes_a_fresh_session_s(ends: Endpoints) -> None:
    """DateStyle=DMY keeps the output style of a fresh session, not of the pooled
    connection the check runs on (which the other client left at Postgres, YMD)."""
    seen = []
    for direct in (True, False):
        with psycopg.connect(ends.dsn(direct), autocommit=True, **OTHER) as other:
            turn(other)
            with psycopg.connect(ends.dsn(direct), options="-c DateStyle=DMY") as conn:
                seen.append([reported(conn), scalar(conn, "show datestyle")])
    assert seen[0][1] == "ISO, DMY"
    assert seen[1] == seen[0]


def test_asyncpg_greeting_datestyle(ends: Endpoints) -> None:
    async def run(direct: bool) -> str:
        host, port = ends.host_port(direct)
        conn = await asyncpg.connect(host=host, port=port, user=APP_USER, password=APP_PASSWORD,
                                     database=APP_DB, ssl=False,
                                     server_settings={"DateStyle": "sql,dmy"})  # fmt: skip
        try:
            return str(conn.get_settings().DateStyle)
        finally:
            await conn.close()

    async def both() -> tuple[str, str]:
        return await run(True), await run(False)

    direct, through = asyncio.run(both())
    assert direct == "SQL, DMY"
    assert through == direct


# ------------------------------- 15: what the differential tester found


@pytest.mark.parametrize("reset", ["DISCARD ALL", "RESET application_name", "RESET ALL"])
def test_failed_reset_reports_what_the_abort_undid(ends2: Endpoints, reset: str) -> None:
    """A reset that fails ends the transaction's changes at once: the server reports the
    values from before it (`DISCARD ALL` cannot run in a transaction, the others fail
    after an error), and the client hears them rather than its in-transaction values."""

    def steps(conn: Conn, other: Conn) -> list[Any]:
        seen: list[Any] = []
        conn.autocommit = False
        conn.execute("SELECT set_config('application_name', 'changed', false)")
        conn.execute("SET timezone = 'Europe/Rome'")
        if reset != "DISCARD ALL":
            with pytest.raises(errors.DivisionByZero):
                conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.Error) as info:
            conn.execute(reset)
        seen += [info.value.sqlstate, reported(conn)]
        conn.rollback()
        conn.autocommit = True
        seen.append(turn(other))
        return [*seen, *view(conn)]

    assert_same(ends2.both(steps, **START))


@pytest.mark.parametrize("in_transaction", [False, True])
def test_reset_of_a_custom_setting_defines_it_for_good(
    ends2: Endpoints, in_transaction: bool
) -> None:
    """RESET of a custom setting that was never set creates it, empty, for the rest of
    the session (the client keeps its connection); nobody else sees it."""

    def steps(conn: Conn, other: Conn) -> list[Any]:
        with conn.transaction() if in_transaction else nullcontext():
            conn.execute("RESET myapp.other")
        seen: list[Any] = [turn(other)]
        seen.append(scalar(conn, "select current_setting('myapp.other', true)"))
        seen.append(scalar(conn, "show myapp.other"))
        with pytest.raises(errors.UndefinedObject) as info:
            other.execute("show myapp.other")
        return [*seen, info.value.sqlstate]

    assert_same(ends2.both(steps))
    assert "pinned to its connection: RESET myapp.other" in ends2.log()


def test_reset_in_a_transaction_takes_no_snapshot(ends2: Endpoints) -> None:
    """The restore after a RESET inside a transaction is no query of the client's: SET
    TRANSACTION may still follow, and a REPEATABLE READ snapshot starts at the client's
    first query (rows committed meanwhile are seen)."""

    def steps(conn: Conn, other: Conn) -> list[Any]:
        other.execute("create table if not exists snap_rows (x int)")
        other.execute("truncate snap_rows")
        conn.execute("BEGIN")
        conn.execute("RESET ALL")
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        other.execute("insert into snap_rows values (1)")
        seen = [scalar(conn, "select count(*) from snap_rows")]
        seen.append(scalar(conn, "show transaction_isolation"))
        seen += view(conn)
        conn.execute("COMMIT")
        other.execute("drop table snap_rows")
        return seen

    start = {**START, "options": START["options"] + " -c search_path=public"}
    assert_same(ends2.both(steps, **start))


# ------------------------------------- a prepared SET changes settings each time it runs


@pytest.mark.parametrize("between", ["simple", "extended"])
def test_prepared_set_counts_each_time_it_runs(ends: Endpoints, between: str) -> None:
    """A named statement that SETs counts when it is executed, again each time: between
    two runs the client set another value, and the second run's is the one it keeps."""

    def steps(conn: Conn, other: Conn) -> list[Any]:
        seen = []
        conn.execute("SET search_path TO pg_catalog", prepare=True)  # a named statement
        turn(other)
        seen.append(view(conn))
        if between == "simple":
            ClientCursor(conn).execute("SET search_path TO public")
        else:
            conn.execute("SET search_path TO public", prepare=False)
        turn(other)
        seen.append(view(conn))
        conn.execute("SET search_path TO pg_catalog", prepare=True)  # run again: Bind only
        turn(other)
        seen.append(view(conn))
        return seen

    assert_same(ends.both(steps))


@pytest.mark.parametrize("how", ["query", "extended"])
def test_set_the_server_discards_after_an_error_changes_nothing(ends: Endpoints, how: str) -> None:
    """After an error in an extended-protocol request the server discards what comes until
    the Sync: a SET sent then (the error already seen) never runs, directly or not."""
    fail = m.parse(b"", b"SELECT 1/0\x00\x00\x00") + m.message(b"B", b"\x00\x00" + b"\x00" * 6)
    fail += m.message(b"E", b"\x00\x00\x00\x00\x00") + m.FLUSH
    text = b"SET search_path TO pg_catalog"
    if how == "query":
        discarded = m.message(b"Q", text + b"\x00")
    else:
        discarded = m.parse(b"", text + b"\x00\x00\x00")
        discarded += m.message(b"B", b"\x00\x00" + b"\x00" * 6)
        discarded += m.message(b"E", b"\x00\x00\x00\x00\x00")

    def run(direct: bool) -> list[Any]:
        con = RawClient(ends.host_port(direct)[1])
        con.login()
        with psycopg.connect(ends.dsn(direct), autocommit=True, **OTHER) as other:
            try:
                con.send(fail)
                kinds = [con.read()[0]]
                while kinds[-1] != b"E":  # the server reports the error now, before the Sync
                    kinds.append(con.read()[0])
                con.send(discarded + m.SYNC)
                kinds += [kind for kind, _ in con.read_until_ready()]
                turn(other)
                shown = [body for kind, body in con.query("SHOW search_path") if kind == b"D"]
                return [kinds, shown]
            finally:
                con.close()

    assert run(False) == run(True)


def test_a_set_prepared_and_never_run_changes_nothing(ends: Endpoints) -> None:
    """asyncpg's prepare() parses and describes a statement without running it."""

    async def run(direct: bool) -> list[Any]:
        con = await apg_connect(*ends.host_port(direct), {})
        try:
            with psycopg.connect(ends.dsn(direct), autocommit=True, **OTHER) as other:
                await con.prepare("SET search_path TO pg_catalog")
                seen = [await con.fetchval("SHOW search_path")]
                turn(other)  # then the client's next borrow has its settings replayed
                return [*seen, await con.fetchval("SHOW search_path")]
        finally:
            await con.close()

    assert asyncio.run(run(False)) == asyncio.run(run(True))
