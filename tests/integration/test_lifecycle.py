"""The proxy's life as an operator sees it: reload, shutdown, idle clients, logs.

SIGHUP re-reads the file: connected clients carry on, new pool limits hold
(measured on the database from a monitor connection, in a database of this
module's own so other tests' backends never count), new proxies listen,
removed ones stop, and a broken file changes nothing but an error line.
SIGTERM stops accepting at once, lets an open transaction finish, then exits 0.
Every proxy started here is recorded, and the last test reads all their logs
for the passwords used.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from helpers import (
    APP_PASSWORD,
    APP_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    dsn,
    free_port,
    proxy_config,
    wait_for,
)
from sluice.dbserver.postgres import SUPERUSER, PgCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(60)

LIFE_DB = "lifecycle_db"
WRONG_PASSWORD = "never-the-password-9"


@pytest.fixture(scope="module")
def life_db(pg: PgCluster) -> str:
    """A database only this module uses, so counting its backends counts only ours."""
    exists = pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{LIFE_DB}'")
    if not exists:
        pg.create_database(LIFE_DB, owner=APP_USER)
    pg.psql("CREATE TABLE IF NOT EXISTS life_rows (note text)", db=LIFE_DB, user=APP_USER)
    return LIFE_DB


@pytest.fixture(scope="module")
def log_files() -> list[Path]:
    """The log of every proxy this module started, for the final password scan."""
    return []


@pytest.fixture
def sluice(
    start_sluice: Callable[..., SluiceProcess], log_files: list[Path]
) -> Callable[..., SluiceProcess]:
    def start(glob: dict[str, Any] | None = None, **overrides: Any) -> SluiceProcess:
        proc = start_sluice(glob=glob, **overrides)
        log_files.append(proc.log_path)
        return proc

    return start


@pytest.fixture
def monitor(pg: PgCluster) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A direct superuser connection to the database, for watching pg_stat_activity."""
    with psycopg.connect(pg.dsn(SUPERUSER, pg.superuser_password), autocommit=True) as conn:
        yield conn


def backends(monitor: psycopg.Connection[tuple[Any, ...]]) -> int:
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s "
        "AND backend_type = 'client backend'"
    )
    row = monitor.execute(sql, (LIFE_DB, APP_USER)).fetchone()
    assert row is not None
    return int(row[0])


def peak_backends_under_load(
    proc: SluiceProcess, monitor: psycopg.Connection[tuple[Any, ...]], clients: int = 6
) -> int:
    """Run `clients` concurrent 0.5 s queries through the proxy; the most backends seen."""
    done = threading.Event()
    peak = 0

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, backends(monitor))
            time.sleep(0.02)

    def one(_: int) -> object:
        with psycopg.connect(dsn(proc, dbname=LIFE_DB), autocommit=True) as conn:
            row = conn.execute("select pg_sleep(0.5), 1").fetchone()
            return None if row is None else row[1]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(clients) as pool:
            assert list(pool.map(one, range(clients), timeout=20)) == [1] * clients
    finally:
        done.set()
        watcher.join()
    return peak


def reloaded(proc: SluiceProcess, times: int) -> bool:
    """Wait until the log shows `times` completed reloads."""
    return wait_for(lambda: proc.log_text().count("configuration reloaded") >= times, 5)


def port_of(proxy: dict[str, Any]) -> int:
    return int(str(proxy["listen"]).rpartition(":")[2])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- SIGHUP


def test_reload_changes_pool_size_and_keeps_clients(
    sluice: Callable[..., SluiceProcess],
    monitor: psycopg.Connection[tuple[Any, ...]],
    life_db: str,
) -> None:
    proc = sluice(pool={"max_connections": 4})
    idle = psycopg.connect(dsn(proc, dbname=life_db), autocommit=True)
    in_txn = psycopg.connect(dsn(proc, dbname=life_db))
    try:
        assert idle.execute("select 1").fetchone() == (1,)
        assert peak_backends_under_load(proc, monitor) > 2  # the old limit let more through
        in_txn.execute("insert into life_rows values ('across a reload')")
        proc.proxies[0]["pool"]["max_connections"] = 2
        proc.reload()
        assert reloaded(proc, 1), proc.log_tail()
        assert idle.execute("select 'still here'").fetchone() == ("still here",)
        in_txn.execute("insert into life_rows values ('after the reload')")
        in_txn.commit()
        assert wait_for(lambda: backends(monitor) <= 2, 5)
        assert peak_backends_under_load(proc, monitor) <= 2
        assert idle.execute("select 'and after load'").fetchone() == ("and after load",)
    finally:
        idle.close()
        in_txn.close()


def test_reload_adds_and_removes_a_proxy(sluice: Callable[..., SluiceProcess]) -> None:
    proc = sluice()
    port = free_port()
    second = {**proxy_config_like(proc), "name": "pg2", "listen": f"127.0.0.1:{port}"}
    proc.proxies.append(second)
    proc.reload()
    assert wait_for(lambda: accepts(port), 5), proc.log_tail()
    with psycopg.connect(dsn(proc, port=str(port))) as conn:
        assert conn.execute("select current_user").fetchone() == (APP_USER,)
    proc.proxies.pop()
    proc.reload()
    assert wait_for(lambda: not accepts(port), 5), proc.log_tail()
    with psycopg.connect(dsn(proc)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def proxy_config_like(proc: SluiceProcess) -> dict[str, Any]:
    """A copy of the first proxy's configuration (its nested tables copied too)."""
    first = proc.proxies[0]
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in first.items()}


@pytest.mark.parametrize("breakage", ["bad-value", "bad-toml"])
def test_invalid_reload_keeps_the_running_config(
    sluice: Callable[..., SluiceProcess], breakage: str
) -> None:
    proc = sluice()
    client = psycopg.connect(dsn(proc), autocommit=True)
    try:
        if breakage == "bad-value":
            proc.proxies[0]["pool"]["max_connections"] = "lots"
            proc.reload()
        else:
            proc.config_path.write_text("[[proxy]\nname = ")
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload failed" in proc.log_text(), 5), proc.log_tail()
        assert "ERROR" in proc.log_text()
        assert proc.proc is not None and proc.proc.poll() is None
        assert client.execute("select 'old config'").fetchone() == ("old config",)
        with psycopg.connect(dsn(proc), connect_timeout=5) as fresh:
            assert fresh.execute("select 2").fetchone() == (2,)
        proc.proxies[0]["pool"]["max_connections"] = 5
        proc.reload()  # a good file afterwards is taken as usual
        assert reloaded(proc, 1), proc.log_tail()
        assert client.execute("select 'new config'").fetchone() == ("new config",)
    finally:
        client.close()


def test_reload_onto_a_busy_port_is_reported_and_harmless(
    sluice: Callable[..., SluiceProcess],
) -> None:
    """A new proxy whose port is taken: an error in the log, the rest keeps serving."""
    proc = sluice()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        proc.proxies.append(
            {**proxy_config_like(proc), "name": "pg2", "listen": f"127.0.0.1:{taken}"}
        )
        proc.reload()
        assert wait_for(lambda: "ERROR" in proc.log_text(), 5), proc.log_tail()
        time.sleep(0.2)
        assert "reload failed" in proc.log_text(), proc.log_tail()
        assert "Task exception was never retrieved" not in proc.log_text()
        assert str(taken) in proc.log_text()
    assert proc.proc is not None and proc.proc.poll() is None
    with psycopg.connect(dsn(proc), connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    proc.reload()  # the port is free now: the same file succeeds
    assert wait_for(lambda: accepts(taken), 5), proc.log_tail()


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_lets_a_transaction_finish(
    sluice: Callable[..., SluiceProcess], pg: PgCluster, life_db: str
) -> None:
    proc = sluice(glob={"shutdown_timeout": 5})
    note = f"graceful-{time.monotonic_ns()}"
    conn = psycopg.connect(dsn(proc, dbname=life_db))
    idle = psycopg.connect(dsn(proc, dbname=life_db), autocommit=True)
    assert proc.proc is not None
    try:
        conn.execute("insert into life_rows values (%s)", (note + "-1",))
        sent = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: not accepts(port_of(proc.proxies[0])), 2)
        time.sleep(1)
        conn.execute("insert into life_rows values (%s)", (note + "-2",))
        conn.commit()
        assert proc.proc.wait(timeout=5) == 0
        assert time.monotonic() - sent < 5
        with pytest.raises(psycopg.OperationalError) as info:
            idle.execute("select 1")
        assert info.value.sqlstate == "57P01", info.value
    finally:
        conn.close()
        idle.close()
    sql = f"SELECT count(*) FROM life_rows WHERE note LIKE '{note}-%'"
    assert pg.psql(sql, db=life_db) == "2"


def test_sigterm_refuses_new_transactions_while_open_ones_finish(
    sluice: Callable[..., SluiceProcess], life_db: str
) -> None:
    """While the proxy drains, a client outside a transaction that starts one is told at
    once that the proxy is shutting down (as PostgreSQL does); the open one commits."""
    proc = sluice(glob={"shutdown_timeout": 5})
    note = f"draining-{time.monotonic_ns()}"
    conn = psycopg.connect(dsn(proc, dbname=life_db))
    idle = psycopg.connect(dsn(proc, dbname=life_db), autocommit=True)
    assert proc.proc is not None
    try:
        conn.execute("insert into life_rows values (%s)", (note,))
        proc.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "shutting down" in proc.log_text(), 2), proc.log_tail()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            idle.execute("select 1")
        assert info.value.sqlstate == "57P01", info.value
        assert "shutting down" in str(info.value), info.value
        assert time.monotonic() - started < 2  # told at once, not when the drain ends
        conn.commit()
        assert proc.proc.wait(timeout=5) == 0
    finally:
        conn.close()
        idle.close()


def test_sigterm_ends_a_transaction_that_outlives_the_timeout(
    sluice: Callable[..., SluiceProcess],
) -> None:
    proc = sluice(glob={"shutdown_timeout": 1})
    conn = psycopg.connect(dsn(proc))
    assert proc.proc is not None
    try:
        conn.execute("select 1")  # a transaction is now open
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=5) == 0
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("select 2")
        assert "shutting down" in str(info.value), info.value
    finally:
        conn.close()


# ---------------------------------------------------------------- idle clients


def test_idle_client_timeout(sluice: Callable[..., SluiceProcess]) -> None:
    proc = sluice(pool={"idle_client_timeout": 1})
    idle = psycopg.connect(dsn(proc), autocommit=True)
    busy = psycopg.connect(dsn(proc), autocommit=True)
    try:
        assert idle.execute("select 1").fetchone() == (1,)
        row = busy.execute("select pg_sleep(2.5), 'busy is not idle'").fetchone()
        assert row == ("", "busy is not idle")
        with pytest.raises(psycopg.OperationalError) as info:
            idle.execute("select 2")
        assert info.value.sqlstate == "57P05", info.value
        assert info.value.diag.severity == "FATAL"
        assert "idle" in str(info.value), info.value
    finally:
        idle.close()
        busy.close()
    with psycopg.connect(dsn(proc)) as conn:
        assert conn.execute("select 3").fetchone() == (3,)


def test_a_client_waiting_for_a_connection_is_not_idle(
    sluice: Callable[..., SluiceProcess],
) -> None:
    """Waiting to borrow (up to borrow_timeout) is not idleness: the query must run."""
    pool = {"max_connections": 1, "borrow_timeout": 5, "idle_client_timeout": 1}
    proc = sluice(pool=pool)
    holder = psycopg.connect(dsn(proc))
    waiter = psycopg.connect(dsn(proc), autocommit=True)
    try:
        holder.execute("select 1")  # holds the only connection
        with ThreadPoolExecutor(1) as pool_:
            fut = pool_.submit(lambda: waiter.execute("select 'served'").fetchone())
            time.sleep(2.5)  # longer than idle_client_timeout, shorter than borrow_timeout
            holder.commit()
            assert fut.result(timeout=5) == ("served",)
    finally:
        holder.close()
        waiter.close()


def test_idle_client_timeout_covers_clients_that_never_log_in(
    sluice: Callable[..., SluiceProcess],
) -> None:
    """A connection that stalls before or during startup must not be held forever."""
    proc = sluice(pool={"idle_client_timeout": 1})
    silent = socket.create_connection(("127.0.0.1", port_of(proc.proxies[0])), timeout=5)
    partial = socket.create_connection(("127.0.0.1", port_of(proc.proxies[0])), timeout=5)
    try:
        partial.sendall(b"\x00\x00\x00\x40\x00\x03\x00\x00user\x00")  # half a startup
        start = time.monotonic()
        for sock in (silent, partial):
            while sock.recv(4096):  # an ErrorResponse at most, then the close
                pass
        assert time.monotonic() - start < 4
    finally:
        silent.close()
        partial.close()


# ---------------------------------------------------------------- logs


def test_logs_never_contain_passwords(pg: PgCluster, log_files: list[Path]) -> None:
    """Run last: the module's logs, plus a debug-level run of every login method."""
    methods = ("scram-sha-256", "md5", "cleartext")
    configs = [proxy_config(pg, free_port(), name=method, auth_method=method) for method in methods]
    proc = SluiceProcess(configs, glob={"log_level": "debug"})
    log_files.append(proc.log_path)
    with proc:
        for config in configs:
            port = str(port_of(config))
            mode = "require" if config["auth_method"] == "cleartext" else "disable"
            for user, password in ((APP_USER, APP_PASSWORD), (OTHER_USER, OTHER_PASSWORD)):
                conninfo = dsn(proc, user=user, password=password, port=port, sslmode=mode)
                with psycopg.connect(conninfo) as conn:
                    conn.execute("select 1")
            for user in (APP_USER, "nobody"):
                conninfo = dsn(proc, user=user, password=WRONG_PASSWORD, port=port, sslmode=mode)
                with pytest.raises(psycopg.OperationalError):
                    psycopg.connect(conninfo).close()
        proc.proxies[0]["pool"]["max_connections"] = 3
        proc.reload()
        assert reloaded(proc, 1)
    texts = [path.read_text(errors="replace") for path in log_files]
    assert len(texts) >= 2 and all(texts)
    for secret in (APP_PASSWORD, OTHER_PASSWORD, WRONG_PASSWORD):
        leaks = [str(p) for p, text in zip(log_files, texts, strict=True) if secret in text]
        assert not leaks, f"a password appears in {leaks}"
