"""Failures through the proxy: what a client sees, and that nothing else is harmed.

Each test breaks one thing (a pool with nothing to lend, a malformed or garbage
packet, a client or a backend killed mid-transaction, a cancel, a database
restart) and checks two sides: the client concerned gets a prompt, correct
PostgreSQL error instead of a hang, and every other client, the pool and the
proxy process go on working. Malformed traffic is sent with `RawClient`, a
bare-socket client that logs in with the project's own SCRAM and message codecs.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    dsn,
    free_port,
    proxy_config,
    wait_for,
)
from rawpg import Message, RawClient
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.wire.pg import messages as m

pytestmark = pytest.mark.timeout(60)

TABLE = "fault_rows"


def errors_in(messages: list[Message]) -> list[dict[str, str]]:
    return [m.parse_error_fields(body) for kind, body in messages if kind == b"E"]


def rows_in(messages: list[Message]) -> list[bytes]:
    """The first column of every DataRow (raw text)."""
    out = []
    for kind, body in messages:
        if kind == b"D":
            (size,) = struct.unpack_from("!i", body, 2)
            out.append(body[6 : 6 + size])
    return out


def extended_query(sql: str) -> bytes:
    """Parse, Bind, Execute and Sync of `sql` (unnamed statement and portal, no parameters)."""
    parse = m.message(b"P", b"\x00" + m.cstr(sql) + b"\x00\x00")
    bind = m.message(b"B", b"\x00\x00" + b"\x00\x00" * 3)
    execute = m.message(b"E", b"\x00" + struct.pack("!i", 0))
    return parse + bind + execute + m.SYNC


def port_of(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


def assert_works(proc: SluiceProcess, **extra: str) -> None:
    with psycopg.connect(dsn(proc, **extra), connect_timeout=5) as conn:
        assert conn.execute("select 7 * 6").fetchone() == (42,)


def active_count(pg: PgCluster, marker: str, state: str = "active") -> int:
    """Backends in `state` whose query text contains `marker` (a unique string literal)."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE state = '{}' AND query LIKE '%{}%' "
        "AND pid <> pg_backend_pid()"
    )
    return int(pg.psql(sql.format(state, marker)))


@pytest.fixture(scope="module")
def table(pg: PgCluster) -> str:
    """A small table owned by the app user, for row-lock tests."""
    pg.psql(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY, v int NOT NULL);"
        f"INSERT INTO {TABLE} SELECT g, 0 FROM generate_series(1, 10) g ON CONFLICT DO NOTHING",
        db=APP_DB,
        user=APP_USER,
    )
    return TABLE


@pytest.fixture
def proc(start_sluice: Callable[..., SluiceProcess]) -> SluiceProcess:
    """A proxy with a single backend connection: one leaked slot shows as a borrow timeout."""
    return start_sluice(pool={"max_connections": 1, "borrow_timeout": 3})


@pytest.fixture
def tight(start_sluice: Callable[..., SluiceProcess]) -> SluiceProcess:
    """One backend connection and a 1 s borrow timeout, for tests that run into it."""
    return start_sluice(pool={"max_connections": 1, "borrow_timeout": 1})


# ---------------------------------------------------------------- pool limits


def test_borrow_timeout_errors_then_connection_stays_usable(tight: SluiceProcess) -> None:
    proc = tight
    holder = psycopg.connect(dsn(proc))  # autocommit off: the first query opens a transaction
    waiter = psycopg.connect(dsn(proc), autocommit=True)
    try:
        holder.execute("select 1")
        start = time.monotonic()
        with pytest.raises(psycopg.Error) as info:
            waiter.execute("select 2")
        elapsed = time.monotonic() - start
        assert info.value.sqlstate == "53300", info.value
        assert 0.8 <= elapsed <= 3.0, elapsed
        holder.commit()
        assert waiter.execute("select 2").fetchone() == (2,)
        assert holder.execute("select 3").fetchone() == (3,)
    finally:
        holder.close()
        waiter.close()


def test_timed_out_request_is_never_run_later(tight: SluiceProcess, table: str) -> None:
    """A query the client was told failed (53300) must not run when it sends the next one."""
    proc = tight
    holder = psycopg.connect(dsn(proc))
    raw = RawClient(port_of(proc))
    try:
        holder.execute("select 1")
        raw.login()
        failed = raw.query(f"UPDATE {table} SET v = -100 WHERE id = 3 RETURNING 'lost'")
        assert [e["C"] for e in errors_in(failed)] == ["53300"]
        holder.commit()
        retry = raw.query("select 'retry'")
        assert errors_in(retry) == []
        assert rows_in(retry) == [b"retry"], retry
        assert holder.execute(f"select v from {table} where id = 3").fetchone() != (-100,)
    finally:
        holder.close()
        raw.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_borrow_timeout_answers_every_pipelined_request(
    tight: SluiceProcess, protocol: str
) -> None:
    """Two requests in one write, the pool busy: the client gets an answer to each."""
    proc = tight
    build = m.query if protocol == "simple" else extended_query
    holder = psycopg.connect(dsn(proc))
    raw = RawClient(port_of(proc))
    try:
        holder.execute("select 1")
        raw.login()
        raw.send(build("select 'first'") + build("select 'second'"))
        first = raw.read_until_ready()
        assert [e["C"] for e in errors_in(first)] == ["53300"], first
        holder.commit()
        second = raw.read_until_ready()  # an error or the row; not silence
        assert errors_in(second) or rows_in(second) == [b"second"], second
        assert rows_in(raw.query("select 'third'")) == [b"third"]
    finally:
        holder.close()
        raw.close()


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("length", [2, 0x7FFFFFFF], ids=["too-short", "oversized"])
def test_bad_message_length_closes_only_that_client(proc: SluiceProcess, length: int) -> None:
    bystander = psycopg.connect(dsn(proc), autocommit=True)
    raw = RawClient(port_of(proc))
    try:
        raw.login()
        assert raw.query("select 1")[-1] == (b"Z", b"I")
        raw.send(b"Q" + struct.pack("!I", length))
        errors = errors_in(raw.read_to_end())
        assert [e["C"] for e in errors] == ["08P01"], errors
        assert errors[0]["S"] == "FATAL"
        assert bystander.execute("select 'still here'").fetchone() == ("still here",)
        assert_works(proc)
    finally:
        raw.close()
        bystander.close()
    assert proc.proc is not None and proc.proc.poll() is None


@pytest.mark.parametrize(
    "packet",
    [
        struct.pack("!I", 3) + b"\x00" * 8,
        struct.pack("!II", 0x7FFFFFFF, m.PROTOCOL_3_0),
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        struct.pack("!II", 8, 0x00020000),
    ],
    ids=["length-3", "length-huge", "http-request", "protocol-2"],
)
def test_garbage_first_packet_is_refused(proc: SluiceProcess, packet: bytes) -> None:
    raw = RawClient(port_of(proc))
    try:
        raw.send(packet)
        errors = errors_in(raw.read_to_end())
    finally:
        raw.close()
    assert [e["C"] for e in errors] == ["08P01"], errors
    assert_works(proc)


def test_unknown_message_type_after_login(proc: SluiceProcess) -> None:
    raw = RawClient(port_of(proc))
    try:
        raw.login()
        raw.send(m.message(b"!", b"junk"))
        errors = errors_in(raw.read_to_end())
    finally:
        raw.close()
    assert [e["C"] for e in errors] == ["08P01"], errors
    assert_works(proc)


# ---------------------------------------------------------------- clients that vanish


def _no_lock_left(pg: PgCluster, proc: SluiceProcess, table: str, row: int) -> None:
    """The row is free again and no app session is left idle in a transaction on it."""
    assert wait_for(lambda: active_count(pg, f"UPDATE {table}", "idle in transaction") == 0, 5)
    with psycopg.connect(dsn(proc)) as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '3s'")
        conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s", (row,))


def test_killed_psql_mid_transaction_leaves_no_lock(
    pg: PgCluster, proc: SluiceProcess, table: str
) -> None:
    cmd = ["psql", "-X", "-q", dsn(proc)]
    psql = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert psql.stdin is not None
        psql.stdin.write(f"BEGIN;\nUPDATE {table} SET v = v + 1 WHERE id = 1;\n".encode())
        psql.stdin.flush()
        assert wait_for(lambda: active_count(pg, f"UPDATE {table}", "idle in transaction") == 1)
    finally:
        psql.kill()
        psql.wait(5)
    _no_lock_left(pg, proc, table, 1)


def test_client_closed_mid_query_cancels_and_releases(
    pg: PgCluster, proc: SluiceProcess, table: str
) -> None:
    raw = RawClient(port_of(proc))
    raw.login()
    raw.send(m.query(f"BEGIN; UPDATE {table} SET v = v + 1 WHERE id = 2; SELECT pg_sleep(30)"))
    assert wait_for(lambda: active_count(pg, f"UPDATE {table}") == 1)
    raw.close()
    assert wait_for(lambda: active_count(pg, f"UPDATE {table}") == 0, 5)
    _no_lock_left(pg, proc, table, 2)


# ---------------------------------------------------------------- backend failures


def _run_in_thread(conn: psycopg.Connection[Any], sql: str) -> Future[Any]:
    """Run `sql` on `conn` in a thread; the future holds its first row or its error."""
    pool = ThreadPoolExecutor(1)
    fut = pool.submit(lambda: conn.execute(sql).fetchone())
    pool.shutdown(wait=False)
    return fut


def test_backend_killed_mid_query(pg: PgCluster, proc: SluiceProcess) -> None:
    marker = "killed-backend-marker"
    conn = psycopg.connect(dsn(proc), autocommit=True)
    try:
        fut = _run_in_thread(conn, f"select pg_sleep(10), '{marker}'")
        assert wait_for(lambda: active_count(pg, marker) == 1)
        start = time.monotonic()
        pg.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        )
        with pytest.raises(psycopg.OperationalError):
            fut.result(timeout=5)
        assert time.monotonic() - start < 5
    finally:
        conn.close()
    assert_works(proc)
    assert_works(proc)


def test_cancel_stops_only_that_query(
    pg: PgCluster, start_sluice: Callable[..., SluiceProcess]
) -> None:
    proc = start_sluice(pool={"max_connections": 2, "borrow_timeout": 3})
    victim = psycopg.connect(dsn(proc), autocommit=True)
    bystander = psycopg.connect(dsn(proc), autocommit=True)
    try:
        doomed = _run_in_thread(victim, "select pg_sleep(30), 'cancel-victim'")
        survivor = _run_in_thread(bystander, "select pg_sleep(2), 'cancel-bystander'")
        assert wait_for(lambda: active_count(pg, "cancel-victim") == 1)
        assert wait_for(lambda: active_count(pg, "cancel-bystander") == 1)
        start = time.monotonic()
        victim.cancel_safe(timeout=5)
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            doomed.result(timeout=5)
        assert info.value.sqlstate == "57014"
        assert time.monotonic() - start < 3
        assert survivor.result(timeout=10) == ("", "cancel-bystander")
        assert victim.execute("select 'after cancel'").fetchone() == ("after cancel",)
    finally:
        victim.close()
        bystander.close()


def test_backend_killed_while_idle_in_transaction(pg: PgCluster, proc: SluiceProcess) -> None:
    conn = psycopg.connect(dsn(proc))
    try:
        conn.execute("select 'idle-txn-marker'")
        assert wait_for(lambda: active_count(pg, "idle-txn-marker", "idle in transaction") == 1)
        pg.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%idle-txn-marker%' AND pid <> pg_backend_pid()"
        )
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 2")
        assert time.monotonic() - start < 3
    finally:
        conn.close()
    assert_works(proc)


def _terminate(pg: PgCluster, marker: str) -> None:
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    )


def test_fatal_from_the_database_is_the_only_reply(
    pg: PgCluster, start_sluice: Callable[..., SluiceProcess]
) -> None:
    """A backend ended with FATAL (a shutdown, pg_terminate_backend) sends that error and
    closes; the client gets it and nothing more, as directly (psycopg once got two
    results for one COMMIT: "received 2 results")."""
    proc = start_sluice(pool={"max_connections": 2, "borrow_timeout": 3})
    raw = RawClient(port_of(proc))
    conn = psycopg.connect(dsn(proc))
    try:
        raw.login()
        assert raw.query("begin; select 'raw-fatal-marker'")[-1] == (b"Z", b"T")
        conn.execute("select 'psycopg-fatal-marker'")
        for marker in ("raw-fatal-marker", "psycopg-fatal-marker"):
            assert wait_for(lambda m=marker: active_count(pg, m, "idle in transaction") == 1)
            _terminate(pg, marker)
        errors = errors_in(raw.read_to_end())
        assert [(e["S"], e["C"]) for e in errors] == [("FATAL", "57P01")], errors
        with pytest.raises(psycopg.errors.AdminShutdown):
            conn.commit()
    finally:
        raw.close()
        conn.close()
    assert_works(proc)


def test_backend_lost_mid_query_is_one_error(pg: PgCluster, proc: SluiceProcess) -> None:
    """A backend that dies without a word (killed) leaves the proxy to answer: once."""
    raw = RawClient(port_of(proc))
    try:
        raw.login()
        raw.send(m.query("select pg_sleep(30), 'silent-death-marker'"))
        assert wait_for(lambda: active_count(pg, "silent-death-marker") == 1)
        pid = pg.psql(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%silent-death-marker%' "
            "AND pid <> pg_backend_pid()"
        )
        subprocess.run(["kill", "-9", pid], check=False)  # the postmaster restarts the others
        errors = errors_in(raw.read_to_end())
        assert len(errors) == 1 and errors[0]["S"] == "FATAL", errors
        assert errors[0]["C"] in ("08006", "57P01"), errors  # lost, or told by the crash
    finally:
        raw.close()
    assert wait_for(lambda: _works(proc), timeout=15)


def _works(proc: SluiceProcess) -> bool:
    try:
        assert_works(proc)
    except psycopg.OperationalError:
        return False
    return True


def test_pinned_count_recovers_when_the_backend_dies(
    pg: PgCluster, start_sluice: Callable[..., SluiceProcess]
) -> None:
    proc = start_sluice(glob={"admin_users": [APP_USER]})
    conn = psycopg.connect(dsn(proc), autocommit=True)
    admin = psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True)
    try:
        conn.execute("create temp table pin_me (i int)")  # pins: the table is the session's
        conn.execute("select 'pinned-death-marker'")
        assert _pool_column(admin, "pinned") == "1"
        assert wait_for(lambda: active_count(pg, "pinned-death-marker", "idle") == 1)
        _terminate(pg, "pinned-death-marker")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
        assert wait_for(lambda: _pool_column(admin, "pinned") == "0"), "pinned count leaked"
    finally:
        conn.close()
        admin.close()


def _pool_column(admin: psycopg.Connection[Any], name: str) -> str:
    cur = admin.execute("SHOW POOLS", prepare=False)  # the console speaks simple queries
    assert cur.description is not None
    column = [d.name for d in cur.description].index(name)
    rows = [row for row in cur.fetchall() if row[0] == APP_DB]
    return str(rows[0][column])


def test_pooled_idle_connection_killed(pg: PgCluster, proc: SluiceProcess) -> None:
    conn = psycopg.connect(dsn(proc), autocommit=True)
    try:
        assert conn.execute("select 'pooled-marker'").fetchone() == ("pooled-marker",)
        killed = pg.psql(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
            "WHERE query LIKE '%pooled-marker%' AND pid <> pg_backend_pid()"
        )
        assert killed == "1"
        assert conn.execute("select 'new backend'").fetchone() == ("new backend",)
    finally:
        conn.close()
    assert_works(proc)


def test_cancel_needs_the_right_key(proc: SluiceProcess) -> None:
    raw = RawClient(port_of(proc))
    try:
        raw.login()
        assert raw.key is not None
        pid, secret = raw.key
        raw.send(m.query("select pg_sleep(1.5), 'wrong key'"))
        time.sleep(0.3)
        send_cancel(port_of(proc), pid, secret ^ 1)
        assert errors_in(raw.read_until_ready()) == []
        raw.send(m.query("select pg_sleep(10), 'right key'"))
        time.sleep(0.3)
        send_cancel(port_of(proc), pid, secret)
        assert [e["C"] for e in errors_in(raw.read_until_ready())] == ["57014"]
    finally:
        raw.close()


def send_cancel(port: int, pid: int, secret: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(m.cancel_request(pid, secret))
        assert sock.recv(1) == b""  # the proxy answers a CancelRequest by closing


def test_cancel_while_waiting_for_a_connection(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 4})
    holder = psycopg.connect(dsn(proc))
    waiter = psycopg.connect(dsn(proc), autocommit=True)
    try:
        holder.execute("select 1")  # holds the only connection in a transaction
        fut = _run_in_thread(waiter, "select 'never ran'")
        time.sleep(0.5)
        start = time.monotonic()
        waiter.cancel_safe(timeout=5)
        with pytest.raises(psycopg.errors.QueryCanceled):
            fut.result(timeout=8)
        assert time.monotonic() - start < 3
    finally:
        holder.close()
        waiter.close()


def test_client_gone_while_waiting_does_not_leak(proc: SluiceProcess) -> None:
    holder = psycopg.connect(dsn(proc))
    try:
        holder.execute("select 1")
        raw = RawClient(port_of(proc))
        raw.login()
        raw.send(m.query("select 'queued'"))
        time.sleep(0.3)  # now waiting for the only connection
        raw.close()
        time.sleep(0.2)
        holder.commit()
        assert_works(proc)
        assert holder.execute("select 2").fetchone() == (2,)
    finally:
        holder.close()


# ---------------------------------------------------------------- database restart


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PgCluster]:
    """A server of our own, for tests that stop or restart it."""
    with PgCluster() as cluster:
        cluster.create_user(APP_USER, APP_PASSWORD)
        cluster.create_user(OTHER_USER, OTHER_PASSWORD)
        cluster.create_database(APP_DB, owner=APP_USER)
        yield cluster


def test_database_restart_discards_stale_connections(private_pg: PgCluster) -> None:
    config = proxy_config(private_pg, free_port(), pool={"max_connections": 2, "borrow_timeout": 3})
    proc = SluiceProcess([config])
    proc.start()
    idle = psycopg.connect(dsn(proc), autocommit=True)
    busy = psycopg.connect(dsn(proc), autocommit=True)
    try:
        assert idle.execute("select 1").fetchone() == (1,)
        fut = _run_in_thread(busy, "select pg_sleep(10), 'restart-marker'")
        assert wait_for(lambda: active_count(private_pg, "restart-marker") == 1)
        private_pg.restart()
        with pytest.raises(psycopg.OperationalError):
            fut.result(timeout=5)
        assert idle.execute("select 'after restart'").fetchone() == ("after restart",)
        assert_works(proc)
    finally:
        idle.close()
        busy.close()
        proc.stop()
        print(f"---- sluice log ----\n{proc.log_tail(60)}")


def test_database_down_gives_prompt_error(private_pg: PgCluster) -> None:
    proc = SluiceProcess([proxy_config(private_pg, free_port())])
    proc.start()
    try:
        assert_works(proc)
        private_pg.stop()
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            assert_works(proc)
        assert time.monotonic() - start < 8
        private_pg.start()
        assert_works(proc)
    finally:
        if not private_pg.running:
            private_pg.start()
        proc.stop()
        print(f"---- sluice log ----\n{proc.log_tail(60)}")
