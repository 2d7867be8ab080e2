"""idle_transaction_timeout: a client that stalls inside a transaction loses it, told why.

With one database connection in the pool, client A opens a transaction, writes, and
goes quiet; client B waits for the connection. After the timeout A's session is closed
with the engine's error (PostgreSQL FATAL 25P03, MySQL 1159), its transaction is rolled
back, and B gets a connection. What is not idleness is left alone: a long query inside a
transaction, a client idle outside one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pymysql
import pytest

from helpers import APP_DB, dsn, mysql_kwargs
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(60)

TABLE = "idle_txn_rows"
POOL = {"max_connections": 1, "borrow_timeout": 10, "idle_transaction_timeout": 1}


def in_thread(fn: Callable[[], Any]) -> Future[Any]:
    pool = ThreadPoolExecutor(1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_table(pg: PgCluster) -> str:
    pg.psql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (v text)", db=APP_DB)
    pg.psql(f"GRANT ALL ON {TABLE} TO PUBLIC", db=APP_DB)
    return TABLE


def pg_count(proc: SluiceProcess, table: str) -> int:
    with psycopg.connect(dsn(proc), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(f"select count(*) from {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_pg_stalled_transaction_is_rolled_back_and_its_connection_lent(
    start_sluice: Callable[..., SluiceProcess], pg_table: str
) -> None:
    proc = start_sluice(pool=POOL)
    stalled = psycopg.connect(dsn(proc), connect_timeout=5)
    try:
        stalled.execute(f"insert into {pg_table} values ('never committed')")
        start = time.monotonic()
        waiter = in_thread(lambda: pg_count(proc, pg_table))  # needs the only connection
        assert waiter.result(timeout=8) == 0  # A's insert was rolled back
        waited = time.monotonic() - start
        assert 0.9 <= waited < 5, waited  # not before the timeout, and not long after it
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout) as info:
            stalled.execute("select 1")
        assert info.value.diag.severity_nonlocalized == "FATAL"
        assert str(info.value) == "terminating connection due to idle-in-transaction timeout"
    finally:
        stalled.close()
    assert pg_count(proc, pg_table) == 0
    assert "Traceback" not in proc.log_text()


def test_pg_long_query_in_a_transaction_is_not_idleness(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice(pool=POOL)
    with psycopg.connect(dsn(proc), connect_timeout=5) as conn:
        conn.execute("select 'in a transaction'")
        assert conn.execute("select pg_sleep(2.5), 'slow'").fetchone() == ("", "slow")
        assert conn.execute("select 'still there'").fetchone() == ("still there",)
        conn.commit()


def test_pg_idle_outside_a_transaction_is_left_alone(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice(pool=POOL)
    with psycopg.connect(dsn(proc), autocommit=True, connect_timeout=5) as conn:
        conn.execute("set application_name = 'pinned, not in a transaction'")
        conn.execute("create temp table pins (i int)")  # holds the connection, no transaction
        time.sleep(2.5)
        assert conn.execute("select 'still there'").fetchone() == ("still there",)


# ---------------------------------------------------------------- MySQL


@pytest.fixture
def my_table(mariadb: MariaDbCluster) -> str:
    mariadb.sql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (v text)", db=APP_DB)
    return TABLE


def my_connect(proc: SluiceProcess, **extra: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**mysql_kwargs(proc), connect_timeout=5, read_timeout=15, **extra)


def my_count(proc: SluiceProcess, table: str) -> int:
    with my_connect(proc, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_mysql_stalled_transaction_is_rolled_back_and_its_connection_lent(
    start_mysql_proxy: Callable[..., SluiceProcess], my_table: str
) -> None:
    proc = start_mysql_proxy(pool=POOL)
    stalled = my_connect(proc)
    try:
        stalled.begin()
        with stalled.cursor() as cur:
            cur.execute(f"insert into {my_table} values ('never committed')")
        start = time.monotonic()
        waiter = in_thread(lambda: my_count(proc, my_table))
        assert waiter.result(timeout=8) == 0
        waited = time.monotonic() - start
        assert 0.9 <= waited < 5, waited
        with pytest.raises(pymysql.err.OperationalError) as info, stalled.cursor() as cur:
            cur.execute("select 1")
        code, text = info.value.args
        assert code == 1159, info.value  # ER_NET_READ_INTERRUPTED (08S01)
        assert "idle-in-transaction timeout" in text
    finally:
        stalled.close()
    assert my_count(proc, my_table) == 0
    assert "Traceback" not in proc.log_text()


def test_mysql_long_query_in_a_transaction_is_not_idleness(
    start_mysql_proxy: Callable[..., SluiceProcess],
) -> None:
    proc = start_mysql_proxy(pool=POOL)
    with my_connect(proc) as conn, conn.cursor() as cur:
        conn.begin()
        cur.execute("select sleep(2.5), 'slow'")
        assert cur.fetchone() == (0, "slow")
        cur.execute("select 'still there'")
        assert cur.fetchone() == ("still there",)
        conn.commit()
