"""The MySQL proxy with real clients against a real MariaDB: login, relay, pooling.

PyMySQL and mysql-connector (pure Python and its C extension, with prepared
cursors) log in with caching_sha2_password or mysql_native_password, over TLS
or not; many short-lived clients share a small pool; transaction boundaries
come from the server's status flags; settings follow a client without pinning,
and what must pin does.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mysql.connector
import pymysql
import pytest

from helpers import APP_USER, OTHER_PASSWORD, OTHER_USER, mysql_kwargs, wait_for
from sluice.dbserver.mariadb import MariaDbCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., SluiceProcess]


def connect(proc: SluiceProcess, **extra: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**{**mysql_kwargs(proc), "ssl_disabled": True, **extra})


@pytest.mark.parametrize("method", ["caching_sha2_password", "mysql_native_password"])
def test_pymysql_logs_in_and_queries(start_mysql_proxy: Start, method: str) -> None:
    proc = start_mysql_proxy(auth_method=method)
    with connect(proc, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("select 1 + 1, current_user(), database()")
        assert cur.fetchone() == (2, f"{APP_USER}@%", "appdb")


def test_wrong_password_and_unknown_user_get_1045(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()
    for user, password in ((APP_USER, "wrong"), ("nobody", "x")):
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proc, user=user, password=password)
        assert info.value.args[0] == 1045
        assert "Access denied" in info.value.args[1]


def test_unknown_database_fails_the_login(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy()
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proc, database="no_such_db")
    assert info.value.args[0] == 1049


def test_tls_login_and_require_tls(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(require_tls=True)
    with pymysql.connect(**mysql_kwargs(proc), ssl={"check_hostname": False}) as conn:
        assert conn.get_host_info()
        with conn.cursor() as cur:
            cur.execute("select 7")
            assert cur.fetchone() == (7,)
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proc)
    assert info.value.args[0] == 3159


@pytest.mark.parametrize("use_pure", [True, False])
def test_connector_prepared_cursor(start_mysql_proxy: Start, use_pure: bool) -> None:
    proc = start_mysql_proxy()
    conn = mysql.connector.connect(**mysql_kwargs(proc), use_pure=use_pure, ssl_disabled=True)
    try:
        cur = conn.cursor(prepared=True)
        for n in range(20):
            cur.execute("select %s * 3, %s", (n, f"v{n}"))
            assert cur.fetchall() == [(n * 3, f"v{n}")]
        cur.close()
    finally:
        conn.close()


def test_many_clients_share_a_small_pool(start_mysql_proxy: Start, mariadb: MariaDbCluster) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 5, "borrow_timeout": 60})
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], mariadb.backend_count(user=APP_USER))
            stop.wait(0.05)

    def client(i: int) -> bool:
        with connect(proc, autocommit=True) as conn, conn.cursor() as cur:
            for j in range(5):
                cur.execute("select %s * 2", (i * j,))
                assert cur.fetchone() == (i * j * 2,)
        return True

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(40) as pool:
            assert sum(pool.map(client, range(200))) == 200
    finally:
        stop.set()
        watcher.join()
    assert 1 <= peak[0] <= 5


def test_transaction_keeps_its_connection_until_commit(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 2})
    with connect(proc) as setup, setup.cursor() as cur:  # autocommit off, PyMySQL's default
        cur.execute("create table if not exists tx_rows (id int primary key, n int)")
        cur.execute("replace into tx_rows values (1, 0)")
        setup.commit()
    a, b = connect(proc), connect(proc, autocommit=True)
    try:
        with a.cursor() as cur:
            cur.execute("update tx_rows set n = 1 where id = 1")
            cur.execute("select connection_id()")
            first = cur.fetchone()
            with b.cursor() as other:  # another client runs meanwhile on the other connection
                other.execute("select n from tx_rows where id = 1")
                assert other.fetchone() == (0,)  # a's change is not committed yet
            cur.execute("select connection_id()")
            assert cur.fetchone() == first  # same connection for the whole transaction
            a.rollback()
            cur.execute("select n from tx_rows where id = 1")
            assert cur.fetchone() == (0,)
    finally:
        a.close()
        b.close()


def test_tracked_settings_follow_the_client(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    tokyo, utc = connect(proc, autocommit=True), connect(proc, autocommit=True)
    try:
        with tokyo.cursor() as cur:
            cur.execute("set time_zone = '+09:00'")
        for _ in range(3):  # one connection, taken in turns
            with tokyo.cursor() as cur:
                cur.execute("select @@session.time_zone")
                assert cur.fetchone() == ("+09:00",)
            with utc.cursor() as cur:
                cur.execute("select @@session.time_zone")
                assert cur.fetchone() == ("SYSTEM",)
    finally:
        tokyo.close()
        utc.close()
    assert "pinned" not in proc.log_text()


def test_user_variable_pins(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 2})
    with connect(proc, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("set @answer = 42")
        for _ in range(3):
            cur.execute("select @answer")
            assert cur.fetchone() == (42,)
    deadline = time.monotonic() + 5
    while "pinned to its connection: user variable" not in proc.log_text():
        assert time.monotonic() < deadline, proc.log_tail()
        time.sleep(0.05)
    with connect(proc, autocommit=True) as conn, conn.cursor() as cur:
        for _ in range(3):  # the connection was reset: no one else sees @answer
            cur.execute("select @answer")
            assert cur.fetchone() == (None,)


def test_borrow_timeout_is_9501(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1, "borrow_timeout": 1})
    holder, waiter = connect(proc), connect(proc, autocommit=True)
    try:
        with holder.cursor() as cur:
            cur.execute("begin")  # an open transaction holds the only connection
        with pytest.raises(pymysql.err.OperationalError) as info, waiter.cursor() as cur:
            cur.execute("select 2")
        assert info.value.args[0] == 9501
        holder.commit()
        with waiter.cursor() as cur:
            cur.execute("select 3")
            assert cur.fetchone() == (3,)
    finally:
        holder.close()
        waiter.close()


def test_shutdown_refuses_new_transactions_while_open_ones_finish(
    start_mysql_proxy: Start,
) -> None:
    """While the proxy drains after SIGTERM, a client outside a transaction that starts
    one gets ER_SERVER_SHUTDOWN (1053) at once, as from the server; the open one commits."""
    proc = start_mysql_proxy(glob={"shutdown_timeout": 5})
    holder, idle = connect(proc), connect(proc, autocommit=True)
    assert proc.proc is not None
    try:
        with holder.cursor() as cur:
            cur.execute("begin")
            cur.execute("select 1")
        proc.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "shutting down" in proc.log_text(), 2), proc.log_tail()
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info, idle.cursor() as cur:
            cur.execute("select 2")
        assert info.value.args[0] == 1053, info.value
        assert time.monotonic() - started < 2  # told at once, not when the drain ends
        holder.commit()
        assert proc.proc.wait(timeout=5) == 0
    finally:
        holder.close()
        idle.close()


@pytest.mark.parametrize("use_pure", [True, False])
def test_prepared_statements_move_between_connections(
    start_mysql_proxy: Start, use_pure: bool
) -> None:
    """Two clients take turns on a pool of one; their statements follow without pinning."""
    proc = start_mysql_proxy(pool={"max_connections": 1, "max_prepared_statements": 3})
    kwargs = {**mysql_kwargs(proc), "use_pure": use_pure, "ssl_disabled": True, "autocommit": True}
    conns = [mysql.connector.connect(**kwargs) for _ in range(2)]
    try:
        cursors = [conn.cursor(prepared=True) for conn in conns]
        for n in range(12):
            for k, cur in enumerate(cursors):
                sql = f"select %s + {n % 5}, %s"  # five statements, over a cache of three
                cur.execute(sql, (k * 100 + n, f"c{k}"))
                assert cur.fetchall() == [(k * 100 + n + n % 5, f"c{k}")]
        for cur in cursors:
            cur.close()
    finally:
        for conn in conns:
            conn.close()
    assert "pinned" not in proc.log_text()


def _prepares(mariadb: MariaDbCluster) -> int:
    return int(mariadb.sql("show global status like 'Com_stmt_prepare'").split()[1])


def test_evicted_statement_is_prepared_again(
    start_mysql_proxy: Start, mariadb: MariaDbCluster
) -> None:
    """A statement evicted from the connection is prepared there again before it runs."""
    proc = start_mysql_proxy(pool={"max_connections": 1, "max_prepared_statements": 2})
    before = _prepares(mariadb)
    kwargs = {**mysql_kwargs(proc), "use_pure": True, "ssl_disabled": True, "autocommit": True}
    first, second = (mysql.connector.connect(**kwargs) for _ in range(2))
    try:
        keep = first.cursor(prepared=True)
        keep.execute("select %s * 10", (1,))
        assert keep.fetchall() == [(10,)]
        others = [second.cursor(prepared=True) for _ in range(3)]
        for k, cur in enumerate(others):  # three more statements on the one connection
            cur.execute(f"select %s + {k}", (k,))
            assert cur.fetchall() == [(2 * k,)]
        for n in range(2, 5):  # the first statement was evicted: it must still run
            keep.execute("select %s * 10", (n,))
            assert keep.fetchall() == [(n * 10,)]
    finally:
        first.close()
        second.close()
    assert _prepares(mariadb) - before == 5  # four statements, and the evicted one again


def test_kill_query_with_the_proxy_connection_id(start_mysql_proxy: Start) -> None:
    """KILL QUERY <id> (the id the proxy's greeting gave) stops that client's query only."""
    proc = start_mysql_proxy()
    runner, killer = connect(proc, autocommit=True), connect(proc, autocommit=True)
    bystander = connect(proc, autocommit=True)
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(_run, runner, "select sleep(20)")
            other = pool.submit(_run, bystander, "select sleep(2)")
            time.sleep(1)
            with killer.cursor() as cur:
                cur.execute(f"KILL QUERY {runner.thread_id()}")
            with pytest.raises(pymysql.err.OperationalError) as info:
                slow.result(timeout=5)
            assert info.value.args[0] == 1317
            assert other.result(timeout=10) == (0,)  # not the other client's query
        with killer.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as unknown:
            cur.execute("KILL QUERY 4242")
        assert unknown.value.args[0] == 1094
    finally:
        for conn in (runner, killer, bystander):
            conn.close()


def _run(conn: pymysql.connections.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


@pytest.mark.parametrize("use_pure", [True, False])
def test_change_user(start_mysql_proxy: Start, use_pure: bool) -> None:
    proc = start_mysql_proxy()
    kwargs = {**mysql_kwargs(proc), "use_pure": use_pure, "ssl_disabled": True}
    conn = mysql.connector.connect(**kwargs)
    try:
        cur = conn.cursor()
        cur.execute("set @mine = 1")  # pins; the change of user must leave it behind
        conn.cmd_change_user(username=OTHER_USER, password=OTHER_PASSWORD, database="appdb")
        cur = conn.cursor()
        cur.execute("select current_user(), database(), @mine")
        assert cur.fetchall() == [(f"{OTHER_USER}@%", "appdb", None)]
        with pytest.raises(mysql.connector.Error) as info:
            conn.cmd_change_user(username=OTHER_USER, password="wrong", database="appdb")
        assert info.value.errno == 1045
    finally:
        conn.close()


def test_reset_connection_unpins(start_mysql_proxy: Start) -> None:
    proc = start_mysql_proxy(pool={"max_connections": 1})
    kwargs = {**mysql_kwargs(proc), "use_pure": True, "ssl_disabled": True, "autocommit": True}
    conn = mysql.connector.connect(**kwargs)
    other = mysql.connector.connect(**kwargs)
    try:
        cur = conn.cursor()
        cur.execute("set @x = 5")  # pins the only connection
        cur.execute("set time_zone = '+02:00'")
        conn.cmd_reset_connection()
        cur.execute("select @x, @@session.time_zone")
        assert cur.fetchall() == [(None, "SYSTEM")]
        ocur = other.cursor()  # the connection is free again: the other client gets it
        ocur.execute("select 1")
        assert ocur.fetchall() == [(1,)]
    finally:
        conn.close()
        other.close()


def test_max_connections_percent_of_the_server(
    start_mysql_proxy: Start, mariadb: MariaDbCluster
) -> None:
    """A pool given as a percent is sized from the server's own max_connections."""
    proc = start_mysql_proxy(pool={"max_connections": "5%", "borrow_timeout": 30})
    server_max = int(mariadb.sql("select @@max_connections"))
    expected = max(1, server_max * 5 // 100)
    held = [connect(proc) for _ in range(expected + 3)]
    try:
        with ThreadPoolExecutor(len(held)) as pool:
            list(pool.map(lambda conn: _run(conn, "select sleep(1)"), held))
        peak = mariadb.backend_count(user=APP_USER)
        assert peak == expected  # all busy at once: exactly the pool size, no more
    finally:
        for conn in held:
            conn.close()


@pytest.mark.parametrize("driver", ["pymysql", "connector-c"])
def test_last_insert_id_is_the_clients_own(start_mysql_proxy: Start, driver: str) -> None:
    """Between transactions a client's LAST_INSERT_ID() is its own INSERT's, whoever
    used the (only) connection since."""
    proc = start_mysql_proxy(pool={"max_connections": 1})

    def open_conn() -> Any:
        if driver == "pymysql":
            return connect(proc, autocommit=True)
        kwargs = {**mysql_kwargs(proc), "use_pure": False, "ssl_disabled": True}
        return mysql.connector.connect(**kwargs, autocommit=True)

    first, second = open_conn(), open_conn()
    try:
        cur = first.cursor()
        cur.execute("create table if not exists ids (id int auto_increment primary key, v int)")
        cur.execute("insert into ids (v) values (1)")
        mine = cur.lastrowid
        other = second.cursor()
        other.execute("insert into ids (v) values (2)")  # same server connection, newer id
        assert other.lastrowid > mine
        cur.execute("select last_insert_id()")
        assert list(cur.fetchall()) == [(mine,)]
        cur.execute("SELECT LAST_INSERT_ID() AS id;")
        assert list(cur.fetchall()) == [(mine,)]
    finally:
        first.close()
        second.close()
