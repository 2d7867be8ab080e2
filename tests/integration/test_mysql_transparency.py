"""Through Sluice's MySQL transaction pooling a client sees what it sees directly.

Each test runs one scenario twice with real clients (PyMySQL, mysql-connector):
once connected straight to the session MariaDB, once through a `sluice proxy`
whose pool holds one or two connections, so that clients take turns on the same
backend connection. The two runs must give the same results, the same status
flags and the same rows committed; where Sluice cannot know the answer (the
previous statement's ROW_COUNT() or warnings after the client moved to another
connection) the run through Sluice gets the documented error instead, and never
another client's value. A proxy serves every test that asks for its pool.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import SERVER_STATUS

from helpers import APP_DB, APP_PASSWORD, APP_USER, free_port, mysql_kwargs, mysql_proxy_config
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., SluiceProcess]
Kwargs = dict[str, Any]
# What Sluice answers when a statement reads what the client's previous statement
# left in a session that its connection did not run (ER_NOT_SUPPORTED_YET).
REFUSED = 1235
_names = itertools.count()


def unique(prefix: str) -> str:
    """A table or schema name no other run of a scenario uses."""
    return f"{prefix}_{next(_names)}"


@pytest.fixture(scope="module")
def proxies(mariadb: MariaDbCluster) -> Iterator[dict[str, SluiceProcess]]:
    """The proxies of `targets`, one per pool, started when first asked for: the module's
    tests take turns on their connections, as clients do."""
    started: dict[str, SluiceProcess] = {}
    yield started
    for proc in started.values():
        proc.stop()


@pytest.fixture
def targets(
    proxies: dict[str, SluiceProcess], mariadb: MariaDbCluster
) -> Iterator[Callable[..., Kwargs]]:
    """targets(**pool) -> connect kwargs: the direct server first, then a proxy with `pool`."""
    used: dict[str, int] = {}  # proxy -> length of its log when this test first used it

    def make(**pool: Any) -> Kwargs:
        key = repr(sorted(pool.items()))
        if key not in proxies:
            full = {"max_connections": 1, "borrow_timeout": 30, **pool}
            proxies[key] = SluiceProcess([mysql_proxy_config(mariadb, free_port(), pool=full)])
            proxies[key].start()
        used.setdefault(key, len(proxies[key].log_text()))
        return mysql_kwargs(proxies[key])

    yield make
    for key, start in used.items():
        proc = proxies[key]
        print(f"---- sluice log in this test ({proc.workdir}) ----")
        print(proc.log_text()[start:][-8000:])


def direct(mariadb: MariaDbCluster) -> Kwargs:
    return mariadb.connect_kwargs(APP_USER, APP_PASSWORD, APP_DB)


def both(mariadb: MariaDbCluster, targets: Callable[..., Kwargs], **pool: Any) -> list[Kwargs]:
    return [direct(mariadb), targets(**pool)]


def pymysql_conn(kwargs: Kwargs, **extra: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**{**kwargs, "ssl_disabled": True, "read_timeout": 30, **extra})


def connector_conn(kwargs: Kwargs, **extra: Any) -> Any:
    return mysql.connector.connect(**{**kwargs, "use_pure": True, "ssl_disabled": True, **extra})


def rows(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return [tuple(row) for row in cur.fetchall()] if cur.description else []
    finally:
        cur.close()


def outcome(conn: Any, sql: str) -> Any:
    """The rows of `sql`, or ("error", code)."""
    try:
        return rows(conn, sql)
    except (pymysql.err.MySQLError, mysql.connector.Error) as exc:
        code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) else exc.errno
        return ("error", code)


def count(mariadb: MariaDbCluster, sql: str) -> int:
    return int(mariadb.sql(sql, APP_DB))


# ------------------------------------------------------------ 1. status flags


@pytest.mark.parametrize("local", ["ping", "kill"])
def test_status_flags_are_the_clients_session(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], local: str
) -> None:
    """PyMySQL connects with autocommit off; the OK of a ping (or of a KILL QUERY) must
    not say it is on, or autocommit(True) is skipped and the INSERT is rolled back."""
    table = unique("tr_writes")
    mariadb.sql(f"create table {table} (id int auto_increment primary key, tag int)", APP_DB)

    def scenario(kwargs: Kwargs, tag: int) -> tuple[int, int]:
        conn = pymysql_conn(kwargs)  # autocommit=False: PyMySQL sends SET AUTOCOMMIT = 0
        idle = pymysql_conn(kwargs, autocommit=True)
        try:
            if local == "ping":
                conn.ping(reconnect=False)
            else:
                rows(conn, f"kill query {idle.thread_id()}")
            status = conn.server_status & SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
            conn.autocommit(True)  # skipped by PyMySQL if the status says it is on
            rows(conn, f"insert into {table} (tag) values ({tag})")
        finally:
            conn.close()
            idle.close()
        return status, count(mariadb, f"select count(*) from {table} where tag = {tag}")

    results = [scenario(kwargs, tag) for tag, kwargs in enumerate(both(mariadb, targets))]
    assert results == [(0, 1), (0, 1)]


@pytest.mark.parametrize("busy", [True, False], ids=["mid-query", "idle"])
def test_killed_connection_is_lost_as_directly(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], busy: bool
) -> None:
    """KILL CONNECTION: the server closes the victim's connection without a word, so the
    victim reads a lost connection (2013) during its query, and at its next one
    mysql-connector finds the connection gone."""

    def scenario(kwargs: Kwargs) -> Any:
        victim, killer = connector_conn(kwargs), connector_conn(kwargs)
        seen: list[Any] = []

        def run() -> None:
            if not busy:
                time.sleep(1.0)
            seen.append(outcome(victim, "select sleep(5)" if busy else "select 1"))

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.5)
        rows(killer, f"kill {victim.connection_id}")
        worker.join(10)
        killer.close()
        return seen

    want, got = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got == want
    assert want == [("error", 2013 if busy else -1)]  # -1: "MySQL Connection not available"


@pytest.mark.filterwarnings("ignore::UserWarning")  # mysql-connector echoes each warning
def test_warnings_read_after_a_ping(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """mysql-connector with get_warnings pings (is_connected) before its SHOW WARNINGS: a
    ping is no statement, the warnings of the one before are still there to read."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = connector_conn(kwargs, autocommit=True, get_warnings=True)
        cur = conn.cursor()
        seen = []
        for _ in range(3):
            cur.execute("SELECT 'a' + 'b'")
            cur.fetchall()
            seen.append([tuple(w) for w in cur.warnings or []])
        conn.ping()
        seen.append(outcome(conn, "SHOW COUNT(*) WARNINGS"))
        conn.close()
        return seen

    want, got = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got == want
    assert want[0] and want[-1] == [(2,)]  # the ping cleared nothing


def test_row_count_read_after_a_ping(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """A ping sets ROW_COUNT() to 0 (it keeps the warnings): through Sluice the read after
    a ping Sluice answered gets that or the documented refusal, never the value before."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = pymysql_conn(kwargs, autocommit=True)
        seen = [outcome(conn, "SELECT DATABASE()")]
        conn.ping()
        seen.append(outcome(conn, "SELECT ROW_COUNT()"))
        conn.close()
        return seen

    want, got = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert want[1] == [(0,)]
    assert got[0] == want[0]
    assert got[1] in (want[1], ("error", REFUSED))


def test_connection_ids_grow_as_the_servers(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """Each new connection's id (the greeting's, what KILL names) is greater than the one
    before, as the server's thread ids are: clients compare them after reconnecting."""
    for kwargs in both(mariadb, targets):
        ids = []
        for _ in range(20):
            conn = connector_conn(kwargs)
            ids.append(conn.connection_id)
            conn.close()
        assert ids == sorted(set(ids))


def test_wait_timeout_ends_an_idle_session(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """A session's own wait_timeout ends it once idle that long, though through Sluice
    it holds no server connection that the server could time out."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = connector_conn(kwargs, autocommit=True)
        seen = [outcome(conn, "set session wait_timeout = 1"), outcome(conn, "select 1")]
        time.sleep(2.5)
        seen.append(outcome(conn, "select 2"))
        conn.close()
        return seen

    want, got = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got == want
    assert want[-1][0] == "error"


# ------------------------------------------------------------ 2. prepared statements


def _schemas(mariadb: MariaDbCluster, table_sql: str = "") -> tuple[str, str]:
    names = unique("tr_a"), unique("tr_b")
    for name in names:
        mariadb.create_database(name, owner=APP_USER)
        if table_sql:
            mariadb.sql(table_sql, name)
    return names


def test_prepared_insert_writes_into_the_clients_schema(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    def scenario(kwargs: Kwargs) -> list[str]:
        a_db, b_db = _schemas(mariadb, "create table c (v int)")
        a = connector_conn(kwargs, database=a_db, autocommit=True)
        b = connector_conn(kwargs, database=b_db, autocommit=True)
        try:
            for conn, value in ((a, 1), (b, 2), (a, 3)):
                cur = conn.cursor(prepared=True)
                cur.execute("insert into c (v) values (%s)", (value,))
                cur.close()
        finally:
            a.close()
            b.close()
        return [
            mariadb.sql(f"select group_concat(v order by v) from {db}.c") for db in (a_db, b_db)
        ]

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results == [["1,3", "2"], ["1,3", "2"]]


def test_prepared_statement_keeps_the_schema_it_was_prepared_in(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """SELECT DATABASE() prepared in one schema names it after USE of another, also
    when the statement must be prepared again (evicted from a cache of two)."""

    def scenario(kwargs: Kwargs) -> tuple[list[Any], tuple[str, str]]:
        a_db, b_db = _schemas(mariadb)
        a = connector_conn(kwargs, database=a_db, autocommit=True)
        other = connector_conn(kwargs, database=b_db, autocommit=True)
        seen = []
        try:
            theirs = other.cursor(prepared=True)
            theirs.execute("select database()")  # the same text, prepared in another schema
            seen.append(theirs.fetchall())
            mine = a.cursor(prepared=True)
            mine.execute("select database()")
            seen.append(mine.fetchall())
            rows(a, f"use {b_db}")
            mine.execute("select database()")
            seen.append(mine.fetchall())
            for n in range(3):  # other statements push it out of the connection's cache
                extra = other.cursor(prepared=True)
                extra.execute(f"select %s + {n}", (n,))
                extra.fetchall()
            mine.execute("select database()")
            seen.append(mine.fetchall())
            seen.append(rows(a, "select database()"))
        finally:
            a.close()
            other.close()
        return [[tuple(r) for r in rs] for rs in seen], (a_db, b_db)

    kinds = both(mariadb, targets, max_prepared_statements=2)
    (got_direct, (a1, b1)), (got_proxy, (a2, b2)) = (scenario(kwargs) for kwargs in kinds)
    assert got_direct == [[(b1,)], [(a1,)], [(a1,)], [(a1,)], [(b1,)]]
    assert got_proxy == [[(b2,)], [(a2,)], [(a2,)], [(a2,)], [(b2,)]]


def test_statement_prepared_under_other_settings_is_never_misread(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """`"a"` prepared as a string stays a string after SET sql_mode = 'ANSI_QUOTES': on
    the connection that has it, or, prepared again elsewhere, the documented 1615."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = connector_conn(kwargs, autocommit=True)
        other = connector_conn(kwargs, autocommit=True)
        try:
            mine = conn.cursor(prepared=True)
            mine.execute('select "a"')
            seen: list[Any] = [mine.fetchall()]
            rows(conn, "set sql_mode = 'ANSI_QUOTES'")
            theirs = other.cursor(prepared=True)
            theirs.execute("select 2")  # pushes it out of the connection's cache of one
            theirs.fetchall()
            try:
                mine.execute('select "a"')
                seen.append(mine.fetchall())
            except mysql.connector.Error as exc:
                seen.append(("error", exc.errno))
        finally:
            conn.close()
            other.close()
        return [[tuple(r) for r in rs] if isinstance(rs, list) else rs for rs in seen]

    got_direct, got_proxy = (
        scenario(kwargs) for kwargs in both(mariadb, targets, max_prepared_statements=1)
    )
    assert got_direct == [[("a",)], [("a",)]]
    assert got_proxy == [[("a",)], ("error", 1615)]


# ------------------------------------------------------------ 3. COM_RESET_CONNECTION


def test_savepoint_with_autocommit_off_stays_with_its_client(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """With autocommit off, MariaDB keeps a SAVEPOINT made before any statement started
    a transaction, though the status flags say none is open: the client keeps its
    connection until COMMIT, so its RELEASE finds the savepoint and nobody else's does."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        a, b = (pymysql_conn(kwargs, autocommit=False) for _ in "ab")
        try:
            rows(a, "savepoint sp")
            seen = [outcome(b, "release savepoint sp"), outcome(a, "release savepoint sp")]
            rows(a, "commit")
            seen.append(outcome(a, "release savepoint sp"))  # gone with the commit
            rows(b, "rollback")
            return seen
        finally:
            a.close()
            b.close()

    results = [scenario(kwargs) for kwargs in both(mariadb, targets, max_connections=2)]
    assert results[0] == [("error", 1305), [], ("error", 1305)]
    assert results[1] == results[0]


def test_reset_connection_in_a_transaction_rolls_it_back(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    table = unique("tr_reset")
    mariadb.sql(f"create table {table} (tag int)", APP_DB)

    def scenario(kwargs: Kwargs, tag: int) -> tuple[Any, ...]:
        conn = connector_conn(kwargs, autocommit=False)
        try:
            rows(conn, f"insert into {table} values ({tag})")  # opens a transaction
            conn.cmd_reset_connection()
            after = rows(conn, "select @@in_transaction, @@autocommit")
            conn.commit()  # nothing is left to commit
        finally:
            conn.close()
        return after, count(mariadb, f"select count(*) from {table} where tag = {tag}")

    results = [scenario(kwargs, tag) for tag, kwargs in enumerate(both(mariadb, targets))]
    assert results[0] == ([(0, 0)], 0)  # the connector sets autocommit off again after a reset
    assert results[1] == results[0]


def test_reset_connection_clears_the_clients_statements_and_settings(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """Without a connection held: settings and statements gone, status as after a reset."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = connector_conn(kwargs, autocommit=True)
        try:
            rows(conn, "set time_zone = '+03:00'")
            cur = conn.cursor(prepared=True)
            cur.execute("select 1")
            cur.fetchall()
            conn.cmd_reset_connection()
            seen = [rows(conn, "select @@session.time_zone, @@autocommit")]
            try:
                cur.execute("select 1")  # the statement id the reset deallocated
                seen.append(cur.fetchall())
            except mysql.connector.Error as exc:
                seen.append(exc.errno)
        finally:
            conn.close()
        return seen

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results[1] == results[0] == [[("SYSTEM", 1)], 1243]


# ------------------------------------------------------------ 4. LAST_INSERT_ID()


@pytest.mark.parametrize("driver", ["pymysql", "connector"])
def test_last_insert_id_is_exact(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], driver: str
) -> None:
    def scenario(kwargs: Kwargs) -> list[Any]:
        table = unique("tr_ids")
        mariadb.sql(
            f"create table {table} (id int auto_increment primary key, who char(1))", APP_DB
        )
        opened = pymysql_conn if driver == "pymysql" else connector_conn
        a, b = opened(kwargs, autocommit=True), opened(kwargs, autocommit=True)
        try:
            rows(a, f"insert into {table} (who) values ('a')")  # generated: 1
            rows(a, f"insert into {table} (id, who) values (1000, 'a')")  # explicit: no change
            seen = [rows(a, "select last_insert_id()")]
            rows(b, f"insert into {table} (who) values ('b')")  # b's own: 1001
            seen.append(rows(a, "select last_insert_id() + 0, @@identity, @@last_insert_id"))
            rows(a, "begin")
            seen.append(rows(a, "select last_insert_id()"))
            rows(a, "commit")
            seen.append(rows(b, "select last_insert_id()"))
            rows(a, f"insert into {table} (who) values ('a'), ('a')")  # first of two: 1002
            rows(b, "select 1")
            seen.append(rows(a, "SELECT LAST_INSERT_ID() AS id"))
        finally:
            a.close()
            b.close()
        return seen

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results[0] == [[(1,)], [(1, 1, 1)], [(1,)], [(1001,)], [(1002,)]]
    assert results[1] == results[0]


# ------------------------------------------------------------ 5. the previous statement


READS = [
    ("update {t} set n = n + 1 where id <= 3", "update {t} set n = n + 1 where id = 5",
     "select row_count()"),
    ("select * from {t}", "select * from {t} where id = 1", "select found_rows()"),
    ("select 1 / 0", "select 'x' + 0, 'y' + 0", "show warnings"),
    ("select 1 / 0", "select 'x' + 0, 'y' + 0", "select @@warning_count"),
    ("select 1 / 0", "select 'x' + 0, 'y' + 0", "show count(*) warnings"),
]  # fmt: skip


@pytest.mark.parametrize(("mine", "theirs", "read"), READS)
def test_previous_statement_results_are_the_clients_own(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], mine: str, theirs: str, read: str
) -> None:
    """A read of what the client's previous statement left: refused when another client
    used the connection in between, never that client's; from then on the client keeps
    its connection, so its later reads are its own."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        table = unique("tr_prev")
        mariadb.sql(
            f"create table {table} (id int primary key, n int);"
            f"insert into {table} select seq, 0 from seq_1_to_5",
            APP_DB,
        )
        a, b = pymysql_conn(kwargs, autocommit=True), pymysql_conn(kwargs, autocommit=True)
        try:
            rows(a, mine.format(t=table))
            rows(b, theirs.format(t=table))  # on the connection a just gave back
            seen = [outcome(a, read)]
            for other in ("select 3", theirs):  # b runs elsewhere now
                rows(a, mine.format(t=table))
                rows(b, other.format(t=table))
                seen.append(outcome(a, read))
        finally:
            a.close()
            b.close()
        c = pymysql_conn(kwargs, autocommit=True)
        try:
            rows(c, mine.format(t=table))
            seen.append(outcome(c, read))  # nobody in between: the same connection, its own
        finally:
            c.close()
        return seen

    got_direct, got_proxy = (
        scenario(kwargs) for kwargs in both(mariadb, targets, max_connections=2)
    )
    assert got_proxy[0] == ("error", REFUSED)
    assert got_proxy[1:] == got_direct[1:]
    assert got_direct[0] == got_direct[1]


def test_previous_statement_read_in_the_same_text(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """ROW_COUNT() after a statement of the same multi-statement text is never refused."""
    from pymysql.constants import CLIENT

    def scenario(kwargs: Kwargs) -> list[Any]:
        table = unique("tr_multi")
        mariadb.sql(f"create table {table} (n int); insert into {table} values (1), (2)", APP_DB)
        conn = pymysql_conn(kwargs, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
        other = pymysql_conn(kwargs, autocommit=True)
        try:
            rows(other, "select 1")
            cur = conn.cursor()
            cur.execute(f"update {table} set n = n + 1; select row_count()")
            cur.nextset()
            return list(cur.fetchall())
        finally:
            conn.close()
            other.close()

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results == [[(2,)], [(2,)]]


# Another client's statement, then one of the client's own that leaves the session's
# warnings and FOUND_ROWS() alone (MariaDB clears the warnings only for a statement that
# uses a table or raises a condition; FOUND_ROWS() changes only with a SELECT).
OTHERS_LEFT = [
    ("select * from nosuch_table", "show warnings"),
    ("select 1 / 0", "select @@warning_count"),
    ("select * from nosuch_table", "select @@error_count"),
    ("select * from {t}", "select found_rows()"),
]
NEUTRAL = ["savepoint sp", "select 1", "set names utf8mb4", "commit"]


@pytest.mark.parametrize("neutral", NEUTRAL)
@pytest.mark.parametrize(("theirs", "read"), OTHERS_LEFT)
def test_statement_that_keeps_the_results_never_shows_another_clients(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], theirs: str, read: str, neutral: str
) -> None:
    """b's statement leaves warnings or FOUND_ROWS() on the one connection; a's next
    statement there leaves them in place: a's read gets its own session's value (as
    directly) or the documented refusal, never b's."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        table = unique("tr_keep")
        # A row count no other run reads: MariaDB may give a new session a cached thread
        # whose FOUND_ROWS() an earlier connection left.
        mariadb.sql(
            f"create table {table} (id int primary key); "
            f"insert into {table} select seq from seq_1_to_{5 + next(_names)}",
            APP_DB,
        )
        a, b = pymysql_conn(kwargs, autocommit=True), pymysql_conn(kwargs, autocommit=True)
        try:
            outcome(b, theirs.format(t=table))
            rows(a, neutral)
            seen = [outcome(a, read)]
            a.close()  # the read pinned a: b gets the connection back
            return [*seen, outcome(b, read)]
        finally:
            if a.open:
                a.close()
            b.close()

    got_direct, got_proxy = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got_direct[0] != got_direct[1]  # b's value differs from a's
    assert got_proxy[0] in (got_direct[0], ("error", REFUSED))


@pytest.mark.parametrize("connector", [pymysql_conn, connector_conn])
def test_new_session_reads_an_empty_diagnostics_area(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], connector: Callable[..., Any]
) -> None:
    """Another client leaves warnings on the one connection; a new session's reads of the
    diagnostics area (its first statements) find it empty, as directly, until a statement
    of its own raises a condition. mysql-connector runs SHOW WARNINGS this way."""
    reads = [
        "show warnings",
        "show errors",
        "show count(*) warnings",
        "select @@warning_count, @@error_count",
    ]

    def scenario(kwargs: Kwargs) -> list[Any]:
        b = pymysql_conn(kwargs, autocommit=True)
        a = None
        try:
            outcome(b, "select 1/0")
            outcome(b, "select * from nosuch_table")  # b's connection lists a warning, an error
            b.close()
            a = connector(kwargs, autocommit=True)
            seen = [outcome(a, sql) for sql in reads]
            outcome(a, "select 1/0")  # now a's own warning
            seen.append(outcome(a, "show warnings"))
            return seen
        finally:
            if b.open:
                b.close()
            if a is not None:
                a.close()

    got_direct, got_proxy = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got_direct[:4] == [[], [], [(0,)], [(0, 0)]]
    assert got_proxy == got_direct


@pytest.mark.parametrize(
    ("text", "exact"),
    [("savepoint sp; show warnings", False), ("select * from {t} where 0; show warnings", True)],
)
def test_read_later_in_a_text_needs_a_statement_that_set_it(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], text: str, exact: bool
) -> None:
    """A read after an earlier statement of the same text reads what that statement
    left only if it set it (a SELECT from a table clears the warnings, a SAVEPOINT does
    not): otherwise it is checked as if it came first, and never shows another
    client's warnings."""
    from pymysql.constants import CLIENT

    def scenario(kwargs: Kwargs) -> Any:
        table = unique("tr_text")
        mariadb.sql(f"create table {table} (n int)", APP_DB)
        a, b = (  # the same capabilities: the same pool
            pymysql_conn(kwargs, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS) for _ in "ab"
        )
        try:
            outcome(b, "select * from nosuch_table")
            cur = a.cursor()
            try:
                cur.execute(text.format(t=table))
                cur.nextset()
                return list(cur.fetchall())
            except pymysql.err.MySQLError as exc:
                return ("error", exc.args[0])
        finally:
            a.close()
            b.close()

    got_direct, got_proxy = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got_direct == []
    assert got_proxy == got_direct if exact else got_proxy in (got_direct, ("error", REFUSED))


def test_warnings_of_an_insert_survive_the_insert_id_lookup(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """After an INSERT whose reply carries an insert id, Sluice's own SELECT
    LAST_INSERT_ID() runs on the connection before it goes back: it uses no table and
    raises nothing, so the INSERT's warnings are still the client's to read."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        table = unique("tr_ins_warn")
        mariadb.sql(f"create table {table} (id int auto_increment primary key, n int)", APP_DB)
        conn = pymysql_conn(kwargs, autocommit=True)
        try:
            rows(conn, f"insert ignore into {table} (n) values (1 / 0)")
            return [outcome(conn, "show warnings"), outcome(conn, "select @@warning_count")]
        finally:
            conn.close()

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results[0] == [[("Warning", 1365, "Division by 0")], [(1,)]]
    assert results[1] == results[0]


# ------------------------------------------------------------ 18. roles


@pytest.fixture
def role(mariadb: MariaDbCluster) -> str:
    mariadb.sql(f"create role if not exists tr_role; grant tr_role to {APP_USER}@'%'")
    return "tr_role"


def test_role_does_not_outlive_its_client(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], role: str
) -> None:
    def scenario(kwargs: Kwargs) -> list[Any]:
        a = pymysql_conn(kwargs, autocommit=True)
        try:
            rows(a, f"set role {role}")
            seen = [rows(a, "select current_role()")]
        finally:
            a.close()
        b = pymysql_conn(kwargs, autocommit=True)
        try:
            seen.append(rows(b, "select current_role()"))
        finally:
            b.close()
        return seen

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results == [[[(role,)], [(None,)]], [[(role,)], [(None,)]]]


def test_reset_connection_keeps_the_role_as_mariadb_does(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], role: str
) -> None:
    """MariaDB keeps the role across COM_RESET_CONNECTION: so does the client through
    Sluice, and it is not lent to anyone else with it."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        a = connector_conn(kwargs, autocommit=True)
        b = connector_conn(kwargs, autocommit=True)
        try:
            rows(a, f"set role {role}")
            a.cmd_reset_connection()
            seen = [rows(a, "select current_role()")]
            seen.append(rows(b, "select current_role()"))
        finally:
            a.close()
            b.close()
        return seen

    results = [scenario(kwargs) for kwargs in both(mariadb, targets, max_connections=2)]
    assert results == [[[(role,)], [(None,)]], [[(role,)], [(None,)]]]


def test_reset_gives_back_the_default_role(
    mariadb: MariaDbCluster, start_mysql_proxy: Start, role: str
) -> None:
    """A connection reset after a client's SET ROLE NONE has the account's default role
    again, as a new login of that account has."""
    user, password = "tr_roleuser", "tr-role-secret"
    mariadb.sql(f"create user if not exists {user}@'%' identified by '{password}'")
    mariadb.sql(f"grant {role} to {user}@'%'; set default role {role} for {user}@'%'")
    proc = start_mysql_proxy(
        pool={"max_connections": 1}, users=[{"name": user, "password": password}]
    )

    def scenario(kwargs: Kwargs) -> list[Any]:
        a = pymysql_conn(kwargs, autocommit=True)
        try:
            seen = [rows(a, "select current_role()")]
            rows(a, "set role none")
            seen.append(rows(a, "select current_role()"))
        finally:
            a.close()
        b = pymysql_conn(kwargs, autocommit=True)
        try:
            seen.append(rows(b, "select current_role()"))
        finally:
            b.close()
        return seen

    kinds = [
        mariadb.connect_kwargs(user, password),
        mysql_kwargs(proc, user=user, password=password, database=None),
    ]
    results = [scenario(kwargs) for kwargs in kinds]
    assert results == [[[(role,)], [(None,)], [(role,)]]] * 2


# ------------------------------------------------------------ opaque statements


@pytest.fixture
def routines(mariadb: MariaDbCluster) -> None:
    mariadb.sql(
        "delimiter //\n"
        "create or replace procedure tr_proc() begin set @tr_var = 1; "
        "set session time_zone = '+05:00'; end //\n"
        "create or replace function tr_func() returns int begin set @tr_fvar = 2; return 1; end //",
        APP_DB,
    )


def test_procedure_state_stays_with_its_client(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], routines: None
) -> None:
    """A CALL may leave session state the client reads later: the client keeps it, and no
    other client gets it."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        a, b = pymysql_conn(kwargs, autocommit=True), pymysql_conn(kwargs, autocommit=True)
        try:
            rows(a, "call tr_proc()")
            seen = [rows(b, "select @tr_var, @@time_zone = '+05:00'")]
            seen.append(rows(a, "select @tr_var, @@time_zone = '+05:00'"))
        finally:
            a.close()
        try:
            seen.append(rows(b, "select @tr_var, @@time_zone = '+05:00'"))
        finally:
            b.close()
        return seen

    results = [scenario(kwargs) for kwargs in both(mariadb, targets, max_connections=2)]
    assert results == [[[(None, 0)], [(1, 1)], [(None, 0)]]] * 2


def test_do_statement_state_is_reset_before_another_client(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], routines: None
) -> None:
    def scenario(kwargs: Kwargs) -> list[Any]:
        a, b = pymysql_conn(kwargs, autocommit=True), pymysql_conn(kwargs, autocommit=True)
        try:
            rows(a, "do tr_func()")
            return rows(b, "select @tr_fvar")
        finally:
            a.close()
            b.close()

    results = [scenario(kwargs) for kwargs in both(mariadb, targets)]
    assert results == [[(None,)], [(None,)]]


# ------------------------------------------------------------ prepared SET


@pytest.mark.parametrize("again", [False, True])
def test_prepared_set_counts_each_time_it_runs(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs], again: bool
) -> None:
    """A SET prepared with the binary protocol changes the client's session when it is
    executed, again each time; another client taking a turn on the connection meanwhile
    sees none of it."""

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = connector_conn(kwargs, autocommit=True)
        other = connector_conn(kwargs, autocommit=True)
        try:
            mine = conn.cursor(prepared=True)
            mine.execute("SET time_zone = '+05:00'")
            seen: list[Any] = [rows(other, "select @@time_zone")]
            if again:
                rows(conn, "SET time_zone = '+01:00'")
                seen.append(rows(other, "select @@time_zone"))
                mine.execute("SET time_zone = '+05:00'")  # the same statement, run again
                seen.append(rows(other, "select @@time_zone"))
            seen.append(rows(conn, "select @@time_zone"))
        finally:
            conn.close()
            other.close()
        return seen

    got_direct, got_proxy = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got_proxy == got_direct


def test_statement_prepared_after_a_table_change_describes_the_table_as_it_is(
    mariadb: MariaDbCluster, targets: Callable[..., Kwargs]
) -> None:
    """A PREPARE of a text the connection has already prepared, sent after DDL changed what
    it returns: its reply describes the result as it is now (MariaDB prepares it anew)."""
    table = unique("shape")

    def scenario(kwargs: Kwargs) -> list[Any]:
        conn = connector_conn(kwargs, autocommit=True)
        try:
            rows(conn, f"CREATE TABLE {table} (a INT, b INT)")
            rows(conn, f"INSERT INTO {table} VALUES (1, 2)")
            first = conn.cursor(prepared=True)
            first.execute(f"SELECT * FROM {table}")
            seen: list[Any] = [first.fetchall(), [d[0] for d in first.description]]
            first.close()
            rows(conn, f"ALTER TABLE {table} ADD COLUMN c VARCHAR(5) DEFAULT 'x'")
            again = conn.cursor(prepared=True)
            again.execute(f"SELECT * FROM {table}")
            seen += [again.fetchall(), [d[0] for d in again.description]]
            again.close()
            rows(conn, f"DROP TABLE {table}")
        finally:
            conn.close()
        return [[tuple(r) for r in x] if x and isinstance(x[0], tuple) else x for x in seen]

    got_direct, got_proxy = (scenario(kwargs) for kwargs in both(mariadb, targets))
    assert got_proxy == got_direct
