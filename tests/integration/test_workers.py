"""`workers = 2`: two processes share the listeners, each with its part of the budget.

Which worker a client reached is read from the id the proxy gave it: the
BackendKeyData pid (PostgreSQL) or the connection id (MySQL) leaves the
worker's index as its remainder modulo the number of workers. A cancel or a
KILL travels over a new connection that the kernel may give either worker, so
each test repeats until both cases (same worker, other worker) were seen.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import psycopg
import pymysql
import pytest

from helpers import (
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    PeakWatch,
    dsn,
    free_port,
    mysql_kwargs,
    proxy_config,
    wait_for,
)
from sluice.dbserver.postgres import SUPERUSER, PgCluster
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(300)

Start = Callable[..., SluiceProcess]
WORKERS = 2
READY = f"sluice ready: {WORKERS} workers"
GLOB = {"workers": WORKERS, "admin_users": [APP_USER]}


def ready(proc: SluiceProcess) -> SluiceProcess:
    assert wait_for(lambda: READY in proc.log_text(), timeout=40), proc.log_tail()
    return proc


@pytest.fixture
def two_workers(start_sluice: Start) -> Callable[..., SluiceProcess]:
    def start(glob: dict[str, Any] | None = None, **overrides: Any) -> SluiceProcess:
        return ready(start_sluice(glob={**GLOB, **(glob or {})}, **overrides))

    return start


def worker_of(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid % WORKERS  # the proxy's pid for the client


def admin_show(proc: SluiceProcess, what: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True) as admin:
        cur = admin.execute(f"SHOW {what}")
        assert cur.description is not None
        names = [col.name for col in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def connect_on_both(
    proc: SluiceProcess, count: int, **kwargs: Any
) -> list[psycopg.Connection[Any]]:
    conns = [psycopg.connect(dsn(proc, **kwargs), autocommit=True) for _ in range(count)]
    assert {worker_of(c) for c in conns} == set(range(WORKERS))
    return conns


def worker_pids(proc: SluiceProcess) -> dict[int, int]:
    """index -> pid of the running workers, from the supervisor's log."""
    pids: dict[int, int] = {}
    for index, pid in re.findall(r"worker (\d+) \(pid (\d+)\) ready", proc.log_text()):
        pids[int(index)] = int(pid)
    return pids


def test_both_workers_serve_and_the_console_shows_the_sum(two_workers: Start) -> None:
    proc = two_workers(pool={"max_connections": 4})
    conns = connect_on_both(proc, 40)
    try:
        for conn in conns:
            assert conn.execute("select 1").fetchone() == (1,)
        (pool,) = admin_show(proc, "POOLS")
        assert (pool["cl_active"], pool["max_connections"]) == ("40", "4")
        clients = admin_show(proc, "CLIENTS")
        assert sum(1 for c in clients if c["state"] != "admin") == 40
        (stats,) = admin_show(proc, "STATS")
        assert int(stats["total_query_count"]) >= 40
        (target,) = admin_show(proc, "TARGETS")
        assert target["max_connections"] == "4"
        servers = admin_show(proc, "SERVERS")
        assert 2 <= len(servers) <= 4  # each worker opened its own
    finally:
        for conn in conns:
            conn.close()


def test_metrics_are_the_sum_whichever_worker_answers(two_workers: Start) -> None:
    port = free_port()
    proc = two_workers(glob={"metrics_listen": f"127.0.0.1:{port}"}, pool={"max_connections": 5})
    conns = connect_on_both(proc, 30)
    try:
        for _ in range(12):  # each scrape is a new connection: both workers answer some
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            assert 'sluice_client_connections{engine="postgresql",proxy="pg"} 30.0' in text
            allowed = re.search(r"sluice_max_database_connections_allowed\{[^}]*\} (\S+)", text)
            assert allowed is not None and float(allowed.group(1)) == 5.0
    finally:
        for conn in conns:
            conn.close()


def test_the_budget_holds_under_200_clients(two_workers: Start, pg: PgCluster) -> None:
    proc = two_workers(pool={"max_connections": 5, "borrow_timeout": 120})
    direct = psycopg.connect(pg.dsn(SUPERUSER, pg.superuser_password), autocommit=True)

    def count() -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
        row = direct.execute(sql, (APP_USER,)).fetchone()
        assert row is not None
        return int(row[0])

    async def client() -> tuple[int, int]:
        host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
        conn = await asyncpg.connect(host=host, port=int(port), user=APP_USER,
                                     password=APP_PASSWORD, database=APP_DB, ssl=False,
                                     timeout=60)  # fmt: skip
        try:
            for _ in range(3):
                async with conn.transaction():
                    await conn.execute("SELECT pg_sleep(0.01)")
            pid = conn.get_server_pid()  # the proxy's pid for this client
            return pid % WORKERS, 3
        finally:
            await conn.close()

    async def clients() -> list[tuple[int, int]]:
        return await asyncio.gather(*(client() for _ in range(200)))

    with PeakWatch(count) as watch:
        results = asyncio.run(clients())
    direct.close()
    assert [done for _, done in results] == [3] * 200
    assert {worker for worker, _ in results} == {0, 1}
    assert watch.samples > 10
    print(f"peak {watch.peak} of 5 in {watch.samples} samples")
    assert 2 <= watch.peak <= 5, watch.peak


def test_a_cancel_reaches_the_worker_running_the_query(two_workers: Start) -> None:
    """Each cancel comes on a connection of its own, which the kernel gives either worker:
    16 rounds, so had a worker dropped the cancels it does not hold (half of them), one
    of the 16 would have run its pg_sleep to the end (odds 2**-16 of none)."""
    proc = two_workers(pool={"max_connections": 4})
    for _ in range(16):
        with psycopg.connect(dsn(proc), autocommit=True) as conn:
            timer = threading.Timer(0.3, conn.cancel)
            timer.start()
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("select pg_sleep(20)")
            assert time.monotonic() - started < 10
            assert conn.execute("select 'goes on'").fetchone() == ("goes on",)


def test_two_programs_sharing_a_state_dir_keep_their_workers_apart(
    two_workers: Start, start_sluice: Start
) -> None:
    """Two `sluice proxy` with the same state_dir (two files in one folder, say): each
    program's workers ask only their own siblings, so a cancel still reaches its query."""
    first = two_workers()
    second = ready(start_sluice(glob={**GLOB, "state_dir": first.glob["state_dir"]}))
    for proc in (first, second):
        for _ in range(8):
            with psycopg.connect(dsn(proc), autocommit=True) as conn:
                threading.Timer(0.3, conn.cancel).start()
                with pytest.raises(psycopg.errors.QueryCanceled):
                    conn.execute("select pg_sleep(20)")


def test_sighup_reaches_every_worker(two_workers: Start) -> None:
    proc = two_workers(users=[{"name": APP_USER, "password": APP_PASSWORD}])
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(proc, user=OTHER_USER, password=OTHER_PASSWORD))
    proc.proxies[0]["users"] = [{"name": OTHER_USER, "password": OTHER_PASSWORD}]
    proc.reload()
    assert wait_for(lambda: proc.log_text().count("configuration reloaded") == WORKERS, 10)
    workers = set()
    for _ in range(20):
        with psycopg.connect(dsn(proc, user=OTHER_USER, password=OTHER_PASSWORD)) as conn:
            workers.add(worker_of(conn))
    assert workers == {0, 1}


def test_console_reload_reaches_every_worker(two_workers: Start) -> None:
    proc = two_workers(users=[{"name": APP_USER, "password": APP_PASSWORD}])
    proc.proxies[0]["users"] = [
        {"name": APP_USER, "password": APP_PASSWORD},
        {"name": OTHER_USER, "password": OTHER_PASSWORD},
    ]
    proc.write_config()  # no SIGHUP: the console's RELOAD only
    with psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True) as admin:
        admin.execute("RELOAD")
    assert proc.log_text().count("configuration reloaded") == WORKERS
    workers = set()
    for _ in range(20):
        with psycopg.connect(dsn(proc, user=OTHER_USER, password=OTHER_PASSWORD)) as conn:
            workers.add(worker_of(conn))
    assert workers == {0, 1}


def test_a_killed_worker_is_started_again(two_workers: Start) -> None:
    proc = two_workers()
    victim = worker_pids(proc)[1]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: worker_pids(proc)[1] != victim, 15), proc.log_tail()
    assert f"worker 1 (pid {victim}) ended with signal 9: starting it again" in proc.log_text()
    conns = connect_on_both(proc, 30)
    for conn in conns:
        conn.close()


def test_sigterm_lets_every_workers_transactions_finish(two_workers: Start) -> None:
    proc = two_workers(glob={"shutdown_timeout": 20})
    conns = connect_on_both(proc, 16)
    by_worker = {worker_of(c): c for c in conns}
    for conn in by_worker.values():
        conn.execute("begin")
        conn.execute("select 1")
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: proc.log_text().count("shutting down") >= 1 + WORKERS, 10)
    for conn in by_worker.values():
        conn.execute("commit")  # the transaction in flight may finish
    assert proc.proc.wait(30) == 0
    assert "all workers stopped" in proc.log_text()
    for conn in conns:
        conn.close()


def test_a_budget_smaller_than_the_workers_is_served_by_the_first(two_workers: Start) -> None:
    """max_connections 1 with two workers: worker 1's part is 0, so it does not listen on
    the proxy, and every client reaches worker 0 (none waits for a connection that its
    worker may never have)."""
    proc = two_workers(pool={"max_connections": 1, "borrow_timeout": 3})
    assert "this worker's part of max_connections is 0" in proc.log_text()
    conns = [psycopg.connect(dsn(proc), autocommit=True) for _ in range(12)]
    try:
        assert {worker_of(c) for c in conns} == {0}
        for conn in conns:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()


def test_a_port_in_use_stops_every_worker(pg: PgCluster) -> None:
    """As with one process: a listener that cannot be opened ends the program, status 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: start() cannot mistake it
        port = taken.getsockname()[1]
        proc = SluiceProcess([proxy_config(pg, port)], glob=GLOB)
        try:
            with pytest.raises(RuntimeError, match="exited early"):
                proc.start(timeout=30)
            assert proc.proc is not None and proc.proc.wait(30) == 1
        finally:
            proc.stop()  # had it started after all
    assert "could not start (status 1): stopping" in proc.log_text()


# ---- MySQL: KILL across workers ----


@pytest.fixture
def my_two_workers(start_mysql_proxy: Start) -> SluiceProcess:
    return ready(start_mysql_proxy(glob=GLOB, pool={"max_connections": 4, "borrow_timeout": 10}))


def my_connect(proc: SluiceProcess, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**{**mysql_kwargs(proc), "autocommit": True, **kwargs})


def _one(conn: pymysql.connections.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def test_kill_query_reaches_the_other_worker(my_two_workers: SluiceProcess) -> None:
    proc = my_two_workers
    across = same = 0
    rounds = 0
    while (across < 3 or same < 1) and rounds < 30:
        rounds += 1
        victim, killer = my_connect(proc), my_connect(proc)
        try:
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(_one, victim, "select sleep(20)")
                time.sleep(0.3)
                started = time.monotonic()
                _one(killer, f"KILL QUERY {victim.thread_id()}")
                try:
                    assert slow.result(timeout=10) == (1,)  # MariaDB's SLEEP says 1 if killed
                except pymysql.err.OperationalError as exc:
                    assert exc.args[0] == 1317, exc
                assert time.monotonic() - started < 10
            assert _one(victim, "select 'goes on'") == ("goes on",)
            if victim.thread_id() % WORKERS != killer.thread_id() % WORKERS:
                across += 1
            else:
                same += 1
        finally:
            victim.close()
            killer.close()
    assert across >= 3 and same >= 1, (across, same)


def test_kill_connection_and_unknown_ids_across_workers(my_two_workers: SluiceProcess) -> None:
    proc = my_two_workers
    conns = [my_connect(proc) for _ in range(12)]
    try:
        by_worker = {c.thread_id() % WORKERS: c for c in conns}
        assert set(by_worker) == {0, 1}
        killer, victim = by_worker[0], by_worker[1]
        other = my_connect(proc, user=OTHER_USER, password=OTHER_PASSWORD)
        try:
            with pytest.raises(pymysql.err.OperationalError) as denied:
                _one(other, f"KILL {victim.thread_id()}")  # another user's session
            assert denied.value.args[0] == 1094
        finally:
            other.close()
        unknown_id = max(c.thread_id() for c in conns) * 2 + 1  # odd: worker 1's, unused
        with pytest.raises(pymysql.err.OperationalError) as unknown:
            _one(killer, f"KILL QUERY {unknown_id}")
        assert unknown.value.args[0] == 1094
        _one(killer, f"KILL {victim.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError) as gone:
            _one(victim, "select 1")
        assert gone.value.args[0] in (2006, 2013)
    finally:
        for conn in conns:
            conn.close()


def test_console_pause_waits_for_and_stops_every_worker(two_workers: Start) -> None:
    """PAUSE returns only once the transactions of both workers are done, and then no
    worker lends a connection until RESUME (whichever worker the console reached)."""
    proc = two_workers()
    conns = connect_on_both(proc, 16)
    by_worker = {worker_of(c): c for c in conns}
    for conn in by_worker.values():
        conn.execute("begin")
        conn.execute("select 1")
    with psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True) as admin, \
            ThreadPoolExecutor(4) as pool:  # fmt: skip
        paused = pool.submit(admin.execute, "PAUSE")
        time.sleep(1)
        assert not paused.done()
        # the console's own worker first: its part of the pause is then over, the other's not
        own = worker_of(admin)
        by_worker[own].execute("commit")
        time.sleep(1)
        assert not paused.done()
        by_worker[1 - own].execute("commit")
        paused.result(timeout=10)
        # no worker lends now: a query on either waits
        waiting = [pool.submit(c.execute, "select 2") for c in by_worker.values()]
        time.sleep(1)
        assert not any(w.done() for w in waiting)
        with psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True) as other:
            other.execute("RESUME")  # from a console on either worker
        assert [w.result(timeout=10).fetchone() for w in waiting] == [(2,), (2,)]
    for conn in conns:
        conn.close()


def test_console_pause_of_an_unknown_database_is_refused(two_workers: Start) -> None:
    proc = two_workers()
    conns = connect_on_both(proc, 16)  # pools of the app database on both workers
    with psycopg.connect(dsn(proc, dbname="sluice"), autocommit=True) as admin:
        with pytest.raises(psycopg.errors.InvalidCatalogName, match="no pool for database"):
            admin.execute("PAUSE nosuchdb")
        admin.execute(f"PAUSE {APP_DB}")
        (pool,) = admin_show(proc, "POOLS")
        assert pool["paused"] == "yes"
        admin.execute(f"RESUME {APP_DB}")
    for conn in conns:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.close()
