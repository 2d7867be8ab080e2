"""Real MySQL clients and tools through the MySQL proxy in transaction pooling mode.

Each test drives one client or tool (the `mariadb` command-line client,
PyMySQL with multi-statements, streaming cursors, 20 MB values and LOAD DATA
LOCAL INFILE, sysbench) through a `sluice proxy` in front of the session
MariaDB, and checks results that only come out right if every packet reached
the right backend and every reply came back to the right client. Small pools
with more clients than connections force clients to move between backend
connections: schemas and tracked settings must follow them without pinning,
and each pinning rule must keep its state for its client and for no other.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import pymysql
import pytest
from pymysql.constants import CLIENT

from helpers import APP_DB, APP_PASSWORD, APP_USER, free_port, mysql_kwargs, mysql_proxy_config
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., SluiceProcess]
Conn: TypeAlias = "pymysql.connections.Connection[Any]"

OTHER_DB = "clients_otherdb"


def connect(proc: SluiceProcess, **extra: Any) -> Conn:
    """A PyMySQL connection through the proxy: plaintext, autocommit on, bounded waits."""
    kwargs = {
        **mysql_kwargs(proc),
        "ssl_disabled": True,
        "autocommit": True,
        "connect_timeout": 10,
        "read_timeout": 30,
        "write_timeout": 30,
        **extra,
    }
    return pymysql.connect(**kwargs)


def rows(conn: Conn, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def one(conn: Conn, sql: str, args: Any = None) -> tuple[Any, ...]:
    found = rows(conn, sql, args)
    assert len(found) == 1, found
    return found[0]


def host_port(proc: SluiceProcess) -> tuple[str, int]:
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    return host, int(port)


def peer_of(conn: Conn) -> str:
    """The client address as the proxy logs it (host:port of our end of the socket)."""
    host, port = conn._sock.getsockname()[:2]
    return f"{host}:{port}"


def pin_lines(proc: SluiceProcess, since: int = 0) -> list[str]:
    """The log's lines about pinned clients (from character `since` of the log on)."""
    log = proc.log_text()[since:]
    return [line for line in log.splitlines() if "pinned to its connection" in line]


# ---------------------------------------------------------------- the mariadb client


def mariadb_cli(
    proc: SluiceProcess,
    *args: str,
    stdin: str | None = None,
    password: str = APP_PASSWORD,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run the `mariadb` client through the proxy (batch mode, no headers); never hangs."""
    host, port = host_port(proc)
    cmd = [
        "mariadb",
        "--no-defaults",
        "-h",
        host,
        "-P",
        str(port),
        "-u",
        APP_USER,
        f"-p{password}",
        "--batch",
        "--skip-column-names",
        "--connect-timeout=10",
        *args,
        APP_DB,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    return subprocess.run(
        cmd, input=stdin, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def cli_ok(proc: SluiceProcess, *args: str, stdin: str | None = None) -> str:
    done = mariadb_cli(proc, *args, stdin=stdin)
    assert done.returncode == 0, f"mariadb failed ({done.returncode}): {done.stderr}"
    return done.stdout


@pytest.mark.parametrize(
    ("auth_method", "client_args"),
    [
        ("caching_sha2_password", ["--skip-ssl", "--default-auth=caching_sha2_password"]),
        ("caching_sha2_password", ["--skip-ssl"]),
        ("mysql_native_password", ["--skip-ssl"]),
        ("mysql_native_password", ["--skip-ssl", "--default-auth=caching_sha2_password"]),
    ],
    ids=["sha2", "sha2-switch", "native", "native-switch"],
)
def test_mariadb_cli_queries(
    start_mysql_proxy: Start, auth_method: str, client_args: list[str]
) -> None:
    proc = start_mysql_proxy(auth_method=auth_method)
    out = cli_ok(proc, *client_args, "-e", "select 1 + 1, current_user(), database()")
    assert out == "2\tapp@%\tappdb\n"


def test_mariadb_cli_wrong_password(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()
    done = mariadb_cli(proc, "--skip-ssl", "-e", "select 1", password="wrong")
    assert done.returncode != 0
    assert "ERROR 1045" in done.stderr and "Access denied" in done.stderr, done.stderr


def test_mariadb_cli_over_tls_with_require_tls(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(require_tls=True)
    out = cli_ok(proc, "--ssl", "--default-auth=caching_sha2_password", "-e", "select 'tls ok'")
    assert out == "tls ok\n"
    refused = mariadb_cli(proc, "--skip-ssl", "-e", "select 'plaintext'")
    assert refused.returncode != 0
    assert "ERROR 3159" in refused.stderr, refused.stderr


def test_mariadb_cli_script(start_mysql_proxy: Start) -> None:
    """A script: DDL, a transaction, a one-packet multi-statement (DELIMITER), errors none."""
    proc = start_mysql_proxy(pool={"max_connections": 2})
    script = """
drop table if exists cli_script;
create table cli_script (id int primary key, name varchar(20));
insert into cli_script values (1, 'one'), (2, 'two');
begin;
update cli_script set name = 'uno' where id = 1;
insert into cli_script values (3, 'three');
commit;
begin;
insert into cli_script values (4, 'rolled back');
rollback;
select id, name from cli_script order by id;
delimiter //
select count(*) from cli_script; select max(id) from cli_script; select 'multi' //
delimiter ;
set @answer = 6 * 7;
select @answer;
drop table cli_script;
"""
    out = cli_ok(proc, "--skip-ssl", stdin=script)
    assert out.splitlines() == ["1\tuno", "2\ttwo", "3\tthree", "3", "3", "multi", "42"]


def test_mariadb_cli_error_exit_code_and_next_client(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    done = mariadb_cli(proc, "--skip-ssl", "-e", "select 1; select * from no_such_table; select 3")
    assert done.returncode == 1
    assert done.stdout == "1\n"
    assert "ERROR 1146" in done.stderr, done.stderr
    assert cli_ok(proc, "--skip-ssl", "-e", "select 'next'") == "next\n"


# ---------------------------------------------------------------- PyMySQL


def test_pymysql_multi_statements(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    conn = connect(proc, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "drop table if exists multi_rs; create table multi_rs (n int);"
                "insert into multi_rs values (1), (2), (3);"
                "select n from multi_rs order by n; select sum(n), 'total' from multi_rs;"
                "update multi_rs set n = n * 10; select n from multi_rs order by n desc"
            )
            results = [(cur.rowcount, list(cur.fetchall()))]
            while cur.nextset():
                results.append((cur.rowcount, list(cur.fetchall())))
        assert results == [
            (0, []),  # drop
            (0, []),  # create
            (3, []),  # insert
            (3, [(1,), (2,), (3,)]),
            (1, [(6, "total")]),
            (3, []),  # update
            (3, [(30,), (20,), (10,)]),
        ]
        with conn.cursor() as cur:  # an error ends the batch; the connection carries on
            cur.execute("select 'before'; select * from no_such_table; select 'never'")
            assert cur.fetchall() == (("before",),)
            with pytest.raises(pymysql.err.ProgrammingError) as info:
                cur.nextset()
            assert info.value.args[0] == 1146
        assert rows(conn, "select 'after'; select 'again'") == [("after",)]
        other = connect(proc)  # another capability profile: a pool of its own
        try:
            assert one(other, "select count(*) from multi_rs") == (3,)
        finally:
            other.close()
        assert one(conn, "select n from multi_rs order by n limit 1") == (10,)
        rows(conn, "drop table multi_rs")
    finally:
        conn.close()


def test_large_result_streamed(start_mysql_proxy: Start) -> None:
    """200k rows read row by row (SSCursor), one slow reader not holding up others."""
    proc = start_mysql_proxy(pool={"max_connections": 2})
    conn = connect(proc, cursorclass=pymysql.cursors.SSCursor)
    bystander = connect(proc)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select seq, concat('row-', seq, '-', repeat('x', 20)) from seq_1_to_200000"
            )
            first = cur.fetchmany(10)
            assert first == [(i, f"row-{i}-{'x' * 20}") for i in range(1, 11)]
            time.sleep(1)  # a slow reader: the proxy must buffer little and lose nothing
            assert one(bystander, "select 'not blocked'") == ("not blocked",)
            count, total, last = 10, sum(range(1, 11)), 10
            for seq, text in cur:
                assert seq == last + 1 and text == f"row-{seq}-{'x' * 20}"
                count, total, last = count + 1, total + seq, seq
        assert (count, total) == (200_000, 200_000 * 200_001 // 2)
        assert one(conn, "select 'after stream'") == ("after stream",)
    finally:
        conn.close()
        bystander.close()


def test_large_result_buffered(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    with connect(proc) as conn:
        got = rows(conn, "select seq, seq * 2 from seq_1_to_200000")
        assert len(got) == 200_000
        assert got[0] == (1, 2) and got[-1] == (200_000, 400_000)
        assert sum(r[1] for r in got) == 200_000 * 200_001
    with connect(proc) as conn:
        assert one(conn, "select 'next client'") == ("next client",)


BIG = 20 * 1024 * 1024


@pytest.fixture
def big_table(start_mysql_proxy: Start, mariadb: MariaDbCluster) -> Iterator[SluiceProcess]:
    """A proxy with one connection and an empty table of blobs (made and dropped as root)."""
    mariadb.sql(
        f"DROP TABLE IF EXISTS {APP_DB}.big_values;"
        f"CREATE TABLE {APP_DB}.big_values (id int primary key, v longblob)"
    )
    yield start_mysql_proxy(pool={"max_connections": 1, "borrow_timeout": 5})
    mariadb.sql(f"DROP TABLE IF EXISTS {APP_DB}.big_values")


def test_20mb_value_round_trip(big_table: SluiceProcess) -> None:
    """A 20 MB value in and out: packets of 16 MB continue in both directions.

    The big reply is the last command: what follows one is test_..._after_a_20mb_reply.
    """
    proc = big_table
    value = os.urandom(BIG)  # escaped in the INSERT text: a query of more than 20 MB
    conn = connect(proc, max_allowed_packet=64 * 1024 * 1024)
    try:
        with conn.cursor() as cur:
            assert cur.execute("insert into big_values values (1, %s)", (value,)) == 1
        length, digest = one(conn, "select length(v), md5(v) from big_values where id = 1")
        assert (length, digest) == (BIG, hashlib.md5(value).hexdigest())
        (back,) = one(conn, "select v, 'after the value' from big_values where id = 1")[:1]
        assert back == value
    finally:
        conn.close()


def test_connection_usable_after_a_20mb_reply(big_table: SluiceProcess) -> None:
    """Big replies, each followed by a small query on the pool's only connection.

    Whether a reply ends with the client's write buffer above its high-water mark is a
    matter of timing, so the round is repeated: each round alone shows the bug more often
    than not, ten rounds practically always.
    """
    proc = big_table
    text = "y" * BIG
    with connect(proc, max_allowed_packet=64 * 1024 * 1024, read_timeout=5) as conn:
        for i in range(10):
            assert one(conn, "select repeat('y', %s)", (BIG,)) == (text,)
            assert one(conn, "select %s", (f"round {i}",)) == (f"round {i}",)
    with connect(proc, read_timeout=5) as conn:  # the pool's only connection, lent again
        assert one(conn, "select 'next client'") == ("next client",)


def test_load_data_local_infile(start_mysql_proxy: Start, tmp_path: Path) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},name-{i},{'z' * (i % 50)}\n" for i in range(1, 5001)))
    conn = connect(proc, local_infile=True)
    try:
        rows(conn, "drop table if exists infile_rows")
        rows(conn, "create table infile_rows (id int primary key, name varchar(20), pad text)")
        with conn.cursor() as cur:
            loaded = cur.execute(
                f"load data local infile '{data}' into table infile_rows "
                "fields terminated by ',' (id, name, pad)"
            )
        assert loaded == 5000
        assert one(conn, "select count(*), sum(id), sum(length(pad)) from infile_rows") == (
            5000,
            5000 * 5001 // 2,
            sum(i % 50 for i in range(1, 5001)),
        )
        assert one(conn, "select name from infile_rows where id = 4321") == ("name-4321",)
        missing = tmp_path / "missing.csv"
        with pytest.raises(pymysql.err.OperationalError):  # the client sends an empty file
            rows(conn, f"load data local infile '{missing}' into table infile_rows")
        assert one(conn, "select 'still usable'") == ("still usable",)
    finally:
        conn.close()
    with connect(proc) as other:  # the only connection is back in the pool, clean
        assert one(other, "select count(*) from infile_rows") == (5000,)
        rows(other, "drop table infile_rows")


# ---------------------------------------------------------------- schemas and settings


@pytest.fixture(scope="module")
def other_db(mariadb: MariaDbCluster) -> str:
    mariadb.sql(f"CREATE DATABASE IF NOT EXISTS {OTHER_DB}")
    mariadb.grant(APP_USER, database=OTHER_DB)
    mariadb.sql(
        f"CREATE TABLE IF NOT EXISTS {OTHER_DB}.marker (what varchar(20));"
        f"DELETE FROM {OTHER_DB}.marker; INSERT INTO {OTHER_DB}.marker VALUES ('other');"
    )
    mariadb.sql(
        f"CREATE TABLE IF NOT EXISTS {APP_DB}.marker (what varchar(20));"
        f"DELETE FROM {APP_DB}.marker; INSERT INTO {APP_DB}.marker VALUES ('app');"
    )
    return OTHER_DB


@pytest.mark.parametrize("pool_size", [1, 2])
def test_use_and_init_db_follow_the_client(
    start_mysql_proxy: Start, other_db: str, pool_size: int
) -> None:
    proc = start_mysql_proxy(pool={"max_connections": pool_size})
    a, b = connect(proc), connect(proc)
    try:
        rows(a, f"use {other_db}")  # USE in SQL
        for _ in range(3):
            assert one(a, "select database(), what from marker") == (other_db, "other")
            assert one(b, "select database(), what from marker") == (APP_DB, "app")
        a.select_db(APP_DB)  # COM_INIT_DB
        b.select_db(other_db)
        for _ in range(3):
            assert one(b, "select database(), what from marker") == (other_db, "other")
            assert one(a, "select database(), what from marker") == (APP_DB, "app")
        rows(a, f"use `{other_db}`")
        assert one(a, "select what from marker") == ("other",)
        with pytest.raises(pymysql.err.OperationalError) as info:
            rows(b, "use no_such_schema")  # a failed USE leaves the client where it was
        assert info.value.args[0] == 1044  # access denied: app may not see other schemas
        assert one(b, "select database()") == (other_db,)
        assert one(a, "select database()") == (other_db,)
    finally:
        a.close()
        b.close()
    with connect(proc) as c:  # a new client starts in its own login database
        assert one(c, "select database(), what from marker") == (APP_DB, "app")
    assert pin_lines(proc) == []


SETTINGS = (
    "select char_length('\u00e9'), @@session.sql_mode, @@session.time_zone, @@autocommit, "
    "@@session.collation_connection"
)


@pytest.mark.parametrize("pool_size", [1, 2])
def test_tracked_settings_follow_each_client(start_mysql_proxy: Start, pool_size: int) -> None:
    """SET NAMES, character_set_*, sql_mode, time_zone and autocommit: each client its own."""
    proc = start_mysql_proxy(pool={"max_connections": pool_size})
    default = connect(proc)
    a, b = connect(proc), connect(proc)
    try:
        defaults = one(default, SETTINGS)
        assert defaults[0] == 1 and defaults[3] == 1
        rows(a, "set names latin1")  # the UTF-8 bytes of 'é' now read as two latin1 characters
        rows(a, "set sql_mode = 'ANSI_QUOTES'")
        rows(a, "set time_zone = '+05:30'")
        a.autocommit(False)  # SET AUTOCOMMIT = 0
        rows(b, "set sql_mode = 'TRADITIONAL', time_zone = '-03:00'")
        rows(b, "set session collation_connection = 'utf8mb4_bin'")
        rows(b, "set character_set_client = 'utf8mb4'")
        want_a = (2, "ANSI_QUOTES", "+05:30", 0, "latin1_swedish_ci")
        for _ in range(3):
            assert one(a, SETTINGS) == want_a
            a.commit()
            got_b = one(b, SETTINGS)
            assert got_b[0] == 1 and "STRICT_ALL_TABLES" in got_b[1]
            assert got_b[2:] == ("-03:00", 1, "utf8mb4_bin")
            assert one(default, SETTINGS) == defaults
        with pytest.raises(pymysql.err.OperationalError) as info:  # ANSI_QUOTES: an identifier
            rows(a, 'select "quoted" from dual')
        assert info.value.args[0] == 1054
        a.rollback()
        assert one(b, 'select "quoted" from dual') == ("quoted",)  # a string for b
    finally:
        for conn in (a, b, default):
            conn.close()
    with connect(proc) as c:  # whatever connection it gets, it has the defaults
        assert one(c, SETTINGS) == defaults
    assert pin_lines(proc) == []


def test_autocommit_off_keeps_the_transaction(start_mysql_proxy: Start) -> None:
    """autocommit=0 is tracked: the client's writes stay in its own open transaction."""
    proc = start_mysql_proxy(pool={"max_connections": 2})
    with connect(proc) as setup:
        rows(setup, "create table if not exists ac_rows (id int primary key)")
        rows(setup, "delete from ac_rows")
    a, b = connect(proc, autocommit=False), connect(proc)
    try:
        rows(a, "insert into ac_rows values (1)")
        assert one(b, "select count(*) from ac_rows") == (0,)
        assert one(a, "select count(*) from ac_rows") == (1,)
        a.rollback()
        assert one(a, "select count(*) from ac_rows") == (0,)
        rows(a, "insert into ac_rows values (2)")
        a.commit()
        assert one(b, "select count(*) from ac_rows") == (1,)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- pinning rules


@dataclass(frozen=True)
class Rule:
    """A statement that must pin, how its client uses the state, what a later client sees."""

    setup: tuple[str, ...]
    uses: tuple[tuple[str, Any], ...]  # (sql, expected rows) run in every round
    after: tuple[str, Any] | None  # (sql, expected rows or an error number) for later clients
    reason: str


RULES = {
    "set-user-variable": Rule(
        ("set @pin_v = 42",),
        (("select @pin_v", [(42,)]),),
        ("select @pin_v", [(None,)]),
        "user variable",
    ),
    "select-into-user-variable": Rule(
        ("select 6 * 7 into @pin_v",),
        (("select @pin_v", [(42,)]),),
        ("select @pin_v", [(None,)]),
        "user variable",
    ),
    "temporary-table": Rule(
        ("create temporary table pin_tmp (x int)", "insert into pin_tmp values (1), (2)"),
        (("select count(*) from pin_tmp", [(2,)]),),
        ("select count(*) from pin_tmp", 1146),
        "temporary table",
    ),
    "lock-tables": Rule(
        ("lock tables pin_locked write",),
        (
            ("select count(*) >= 0 from pin_locked", [(1,)]),
            ("select count(*) from pin_free", 1100),  # not locked: the same session says no
        ),
        ("insert into pin_locked values (1)", []),
        "LOCK TABLES",
    ),
    "get-lock": Rule(
        ("select get_lock('sluice_pin', 0)",),
        (("select is_used_lock('sluice_pin') = connection_id()", [(1,)]),),
        ("select is_free_lock('sluice_pin')", [(1,)]),
        "GET_LOCK",
    ),
    "sql-calc-found-rows": Rule(
        (),
        (
            ("select sql_calc_found_rows seq from seq_1_to_100 limit 2", [(1,), (2,)]),
            ("select found_rows()", [(100,)]),
        ),
        None,
        "SQL_CALC_FOUND_ROWS",
    ),
    "found-rows": Rule(  # the first read right after its statement: the same connection
        ("select seq from seq_1_to_5", "select found_rows()"),
        (("select seq from seq_1_to_30", None), ("select found_rows()", [(30,)])),
        None,
        "FOUND_ROWS()",
    ),
    "sql-prepare": Rule(
        ("prepare pin_stmt from 'select ? * 2'",),
        (("execute pin_stmt using 21", [(42,)]),),
        ("execute pin_stmt using 1", 1243),
        "PREPARE",
    ),
    "set-untracked-variable": Rule(
        ("set session div_precision_increment = 9",),
        (("select @@session.div_precision_increment", [(9,)]),),
        ("select @@session.div_precision_increment", [(4,)]),
        "SET div_precision_increment",
    ),
}


def check(conn: Conn, sql: str, expected: Any) -> None:
    """Run `sql`: its rows must be `expected` (None: any), or it must fail with that number."""
    if isinstance(expected, int):
        with pytest.raises(pymysql.err.MySQLError) as info:
            rows(conn, sql)
        assert info.value.args[0] == expected, info.value
    else:
        got = rows(conn, sql)
        if expected is not None:
            assert got == expected, sql


@contextmanager
def holding_a_connection(conn: Conn) -> Iterator[None]:
    """`conn` keeps a backend connection in an open transaction: with LIFO lending it takes
    the one most recently returned, which an unpinned client would have just given back."""
    conn.begin()
    rows(conn, "select 'holding'")
    try:
        yield
    finally:
        conn.commit()


@pytest.fixture(scope="module")
def pin_tables(mariadb: MariaDbCluster) -> None:
    mariadb.sql(
        f"CREATE TABLE IF NOT EXISTS {APP_DB}.pin_locked (x int);"
        f"CREATE TABLE IF NOT EXISTS {APP_DB}.pin_free (x int);"
    )


@pytest.fixture(scope="class")
def pin_proxy(mariadb: MariaDbCluster) -> Iterator[SluiceProcess]:
    """The proxy of the pinning rules, one for all: each rule's clients then get
    connections that clients of the rules before used (and pinned), as a pool lends them."""
    pool = {"max_connections": 2, "borrow_timeout": 10}
    with SluiceProcess([mysql_proxy_config(mariadb, free_port(), pool=pool)]) as proc:
        yield proc


class TestPinningRules:
    """One proxy for all the rules, stopped after them (its pooled connections would count as
    backends in the tests below)."""

    @pytest.mark.parametrize("name", list(RULES))
    def test_pinning_rule(self, pin_proxy: SluiceProcess, pin_tables: None, name: str) -> None:
        rule = RULES[name]
        proc = pin_proxy
        since = len(proc.log_text())  # the pins of this test only
        pinned, other = connect(proc), connect(proc)
        try:
            for sql in rule.setup:
                rows(pinned, sql)
            for _ in range(3):
                for sql, expected in rule.uses:
                    with holding_a_connection(other):
                        check(pinned, sql, expected)
            peer = peer_of(pinned)
            wanted = f"client {peer} user={APP_USER} pinned to its connection: {rule.reason}"
            assert any(line.endswith(wanted) for line in pin_lines(proc, since)), proc.log_tail()
            assert not any(peer_of(other) in line for line in pin_lines(proc, since))
        finally:
            pinned.close()
            other.close()
        if rule.after is None:
            return
        sql, expected = rule.after
        first, second = connect(proc), connect(proc)
        try:
            for conn in (first, second):
                rows(conn, "set session lock_wait_timeout = 3, innodb_lock_wait_timeout = 3")
            with holding_a_connection(first), holding_a_connection(second):  # both connections
                check(first, sql, expected)
                check(second, sql, expected)
        finally:
            first.close()
            second.close()


# ---------------------------------------------------------------- sysbench


def sysbench(proc: SluiceProcess, test: str, command: str, *extra: str, timeout: float = 90) -> str:
    host, port = host_port(proc)
    cmd = [
        "sysbench",
        "--db-driver=mysql",
        f"--mysql-host={host}",
        f"--mysql-port={port}",
        f"--mysql-user={APP_USER}",
        f"--mysql-password={APP_PASSWORD}",
        f"--mysql-db={APP_DB}",
        "--mysql-ssl=off",
        "--tables=2",
        "--table-size=1000",
        *extra,
        test,
        command,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"sysbench {test} {command} failed:\n{output}\n{proc.log_tail()}"
    assert "FATAL" not in output, output
    return output


def stat(output: str, name: str) -> int:
    found = re.search(rf"^\s*{name}:\s+(\d+)", output, re.M)
    assert found is not None, f"no {name!r} in sysbench output:\n{output}"
    return int(found.group(1))


@contextmanager
def peak_backends(mariadb: MariaDbCluster) -> Iterator[list[int]]:
    """Watch the app user's backend connections while the block runs; [peak] at the end."""
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], mariadb.backend_count(user=APP_USER))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield peak
    finally:
        stop.set()
        watcher.join(10)


@pytest.fixture(scope="class")
def sysbench_proxy(mariadb: MariaDbCluster) -> Iterator[SluiceProcess]:
    pool = {"max_connections": 4, "borrow_timeout": 10}
    with SluiceProcess([mysql_proxy_config(mariadb, free_port(), pool=pool)]) as proc:
        sysbench(proc, "oltp_read_write", "cleanup")  # leftovers of an interrupted run
        sysbench(proc, "oltp_read_write", "prepare")
        yield proc
        sysbench(proc, "oltp_read_write", "cleanup")
        print(f"---- sluice log ({proc.workdir}) ----\n{proc.log_tail(80)}")


class TestSysbench:
    """One proxy and one set of tables for the four runs, stopped after them (its pooled
    connections would count as backends in the tests below)."""

    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("test", ["oltp_point_select", "oltp_read_write"])
    def test_sysbench_through_transaction_pool(
        self, sysbench_proxy: SluiceProcess, mariadb: MariaDbCluster, test: str
    ) -> None:
        """8 threads over a pool of 4, text protocol (--db-ps-mode=disable): no errors.

        sysbench ignores deadlocks (1213) and lock wait timeouts by default; oltp_read_write
        on 2 x 1000 rows with 8 threads has a few of them against the server directly too,
        so they are reported, not failed on. Anything else is FATAL and fails the test.
        """
        proc = sysbench_proxy
        with peak_backends(mariadb) as peak:
            out = sysbench(
                proc,
                test,
                "run",
                "--time=5",
                "--threads=8",
                "--db-ps-mode=disable",
                "--mysql-ignore-errors=1213,1205,1020",
            )
        assert stat(out, "transactions") > 100, out
        assert stat(out, "reconnects") == 0, out
        if test == "oltp_point_select":
            assert stat(out, "ignored errors") == 0, out
        print(
            f"sysbench {test}: {stat(out, 'transactions')} transactions, "
            f"{stat(out, 'ignored errors')} ignored errors (deadlocks), peak backends {peak[0]}"
        )
        assert 1 <= peak[0] <= 4
        assert pin_lines(proc) == []

    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("test", ["oltp_point_select", "oltp_read_write"])
    def test_sysbench_server_side_prepared_statements(
        self, sysbench_proxy: SluiceProcess, mariadb: MariaDbCluster, test: str
    ) -> None:
        """sysbench's default, server-side prepared statements: re-prepared, never pinned."""
        proc = sysbench_proxy
        with peak_backends(mariadb) as peak:
            out = sysbench(
                proc, test, "run", "--time=5", "--threads=8", "--mysql-ignore-errors=1213,1205,1020"
            )
        assert stat(out, "transactions") > 100, out
        assert stat(out, "reconnects") == 0, out
        if test == "oltp_point_select":
            assert stat(out, "ignored errors") == 0, out
        assert 1 <= peak[0] <= 4
        assert pin_lines(proc) == []


# ---------------------------------------------------------------- many clients


@pytest.mark.timeout(240)
def test_500_concurrent_clients_over_a_pool_of_10(
    start_mysql_proxy: Start, mariadb: MariaDbCluster
) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 10, "borrow_timeout": 120})
    clients = 500
    everyone_connected = threading.Barrier(clients, timeout=120)

    def client(i: int) -> int:
        with connect(proc, read_timeout=120) as conn:
            everyone_connected.wait()  # all 500 are connected at once
            for j in range(3):
                assert one(conn, "select %s, %s * 2 + %s", (i, i, j)) == (i, i * 2 + j)
            conn.begin()
            tag, backend = one(conn, "select %s, connection_id()", (f"client-{i}",))
            assert tag == f"client-{i}"
            conn.commit()
        return int(backend)

    with peak_backends(mariadb) as peak, ThreadPoolExecutor(clients) as pool:
        backends = list(pool.map(client, range(clients)))
    assert len(backends) == clients
    assert 1 <= len(set(backends)) <= 10, set(backends)
    assert 1 <= peak[0] <= 10, peak
