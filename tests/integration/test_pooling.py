"""Pool behaviour seen from outside: limits, reuse, reset, timeouts, init query.

The proxy's pool is observed only through what a database and its clients can
see: `pg_stat_activity` on the server (how many backends the user `app` has),
`pg_backend_pid()` inside client transactions (which backend served them), and
session state a client left behind. A `BackendWatch` thread samples the backend
count while clients run, so a limit that is exceeded for a moment is caught.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import psycopg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, PeakWatch, dsn, wait_for
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess
from sluice.pool.budget import IDLE_EXCESS_GRACE

StartSluice = Callable[..., SluiceProcess]


def BackendWatch(pg: PgCluster) -> PeakWatch:
    """Samples `pg.backend_count(user="app")` in a thread; `peak` is the largest seen."""
    return PeakWatch(lambda: pg.backend_count(user=APP_USER), interval=0.02)


def no_app_backends(pg: PgCluster) -> None:
    """Wait until earlier tests' backends are gone, so counts belong to this test."""
    assert wait_for(lambda: pg.backend_count(user=APP_USER) == 0, timeout=10)


def scalar(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


async def connect(proc: SluiceProcess) -> asyncpg.Connection:
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    return await asyncpg.connect(
        host=host,
        port=int(port),
        user=APP_USER,
        password=APP_PASSWORD,
        database=APP_DB,
        ssl=False,
        timeout=60,
    )


async def hold_backends(proc: SluiceProcess, clients: int, seconds: float) -> list[int]:
    """`clients` concurrent clients, each in one transaction for `seconds`; their pids."""

    async def one() -> int:
        conn = await connect(proc)
        try:
            async with conn.transaction():
                pid: int = await conn.fetchval("select pg_backend_pid()")
                await conn.execute("select pg_sleep($1)", seconds)
            return pid
        finally:
            await conn.close()

    async with asyncio.timeout(60):
        return await asyncio.gather(*(one() for _ in range(clients)))


# ---------------------------------------------------------------- many clients


async def _short_lived_client(proc: SluiceProcess, cid: int) -> int:
    conn = await connect(proc)
    try:
        for i in range(3):
            assert await conn.fetchval("select $1::int * 2", cid * 10 + i) == (cid * 10 + i) * 2
            async with conn.transaction():
                await conn.execute("insert into pool_many (client, n) values ($1, $2)", cid, i)
                total = await conn.fetchval(
                    "select sum(n)::int from pool_many where client = $1", cid
                )
                assert total == sum(range(i + 1))
        return cid
    finally:
        await conn.close()


async def _many_clients(proc: SluiceProcess, clients: int) -> list[int]:
    setup = await connect(proc)
    await setup.execute("drop table if exists pool_many")
    await setup.execute("create table pool_many (client int, n int)")
    await setup.close()
    async with asyncio.timeout(120):
        done = await asyncio.gather(*(_short_lived_client(proc, c) for c in range(clients)))
    check = await connect(proc)
    rows = await check.fetchval("select count(*) from pool_many")
    await check.execute("drop table pool_many")
    await check.close()
    assert rows == clients * 3
    return done


@pytest.mark.timeout(150)
def test_500_clients_over_10_connections(start_sluice: StartSluice, pg: PgCluster) -> None:
    assert pg.max_connections < 500  # straight to the server, most of them would fail
    no_app_backends(pg)
    proc = start_sluice(pool={"max_connections": 10, "borrow_timeout": 60})
    with BackendWatch(pg) as watch:
        done = asyncio.run(_many_clients(proc, 500))
    assert sorted(done) == list(range(500))
    assert watch.samples > 5
    assert 1 <= watch.peak <= 10, watch.peak


# ---------------------------------------------------------------- session mode


def test_session_mode_keeps_state_then_resets(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"mode": "session", "max_connections": 1})
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        pid = scalar(conn, "select pg_backend_pid()")
        conn.execute("set work_mem = '7MB'")
        conn.execute("set statement_timeout = '123s'")
        conn.execute("create temp table sess_tmp (x int)")
        conn.execute("prepare sess_q as select 41 + 1")
        for i in range(5):
            with conn.transaction():
                conn.execute("insert into sess_tmp values (%s)", (i,))
            row = conn.execute(
                "select pg_backend_pid(), current_setting('work_mem'), "
                "current_setting('statement_timeout'), (select count(*) from sess_tmp)"
            ).fetchone()
            assert row == (pid, "7MB", "123s", i + 1)
        assert conn.execute("execute sess_q").fetchone() == (42,)
    # the next client gets nothing of it: the connection had a temporary schema, which
    # DISCARD ALL leaves, so it was closed rather than reset
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        row = conn.execute(
            "select pg_backend_pid() <> %s, current_setting('work_mem'), "
            "current_setting('statement_timeout'), to_regclass('sess_tmp') is null, "
            "(select count(*) from pg_prepared_statements where name = 'sess_q'), "
            "pg_my_temp_schema() = 0",
            (pid,),
        ).fetchone()
        assert row == (True, "4MB", "0", True, 0, True)


# ---------------------------------------------------------------- reuse and limits


def test_idle_connections_reused_lifo(start_sluice: StartSluice, pg: PgCluster) -> None:
    no_app_backends(pg)
    proc = start_sluice(pool={"max_connections": 10})
    opened = asyncio.run(hold_backends(proc, 5, 0.3))
    assert len(set(opened)) == 5
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        pids = set()
        for _ in range(20):
            with conn.transaction():
                row = conn.execute("select pg_backend_pid()").fetchone()
                assert row is not None
                pids.add(row[0])
    assert len(pids) == 1, f"a lone client was moved between idle connections: {pids}"
    assert pids <= set(opened)
    assert pg.backend_count(user=APP_USER) == 5


def test_server_idle_timeout_closes_idle(start_sluice: StartSluice, pg: PgCluster) -> None:
    no_app_backends(pg)
    proc = start_sluice(pool={"max_connections": 10, "server_idle_timeout": 1})
    asyncio.run(hold_backends(proc, 4, 0.3))
    assert pg.backend_count(user=APP_USER) == 4
    assert wait_for(lambda: pg.backend_count(user=APP_USER) == 0, timeout=6)
    assert "server idle timeout" in proc.log_text()
    with psycopg.connect(dsn(proc)) as conn:  # the pool opens new ones on demand
        assert conn.execute("select 1").fetchone() == (1,)


def test_server_lifetime(start_sluice: StartSluice, pg: PgCluster) -> None:
    no_app_backends(pg)
    proc = start_sluice(pool={"max_connections": 10, "server_lifetime": 1})
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        first = conn.execute("select pg_backend_pid()").fetchone()
        time.sleep(1.5)
        second = conn.execute("select pg_backend_pid()").fetchone()
        assert first != second
        # a connection busy past its lifetime finishes its transaction, then goes
        with conn.transaction():
            mid = conn.execute("select pg_backend_pid()").fetchone()
            time.sleep(1.2)
            assert conn.execute("select pg_backend_pid()").fetchone() == mid
        assert wait_for(lambda: pg.backend_count(user=APP_USER) == 0, timeout=5)
    assert "server lifetime over" in proc.log_text()


def test_init_query_on_every_connection(start_sluice: StartSluice) -> None:
    proc = start_sluice(
        pool={
            "max_connections": 4,
            "init_query": "select set_config('my.flag', 'on', false)",
        }
    )

    async def check_all() -> set[int]:
        async def one() -> int:
            conn = await connect(proc)
            try:
                async with conn.transaction():
                    flag = await conn.fetchval("select current_setting('my.flag', true)")
                    assert flag == "on"
                    await conn.execute("select pg_sleep(0.2)")
                    pid: int = await conn.fetchval("select pg_backend_pid()")
                    return pid
            finally:
                await conn.close()

        async with asyncio.timeout(30):
            return set(await asyncio.gather(*(one() for _ in range(8))))

    assert len(asyncio.run(check_all())) == 4


INIT_FLAG = "select current_setting('my.flag', true)"


def test_init_query_survives_reset_after_pinned_client(start_sluice: StartSluice) -> None:
    proc = start_sluice(
        pool={"max_connections": 1, "init_query": "select set_config('my.flag', 'on', false)"}
    )
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        assert scalar(conn, INIT_FLAG) == "on"
        conn.execute("set work_mem = '5MB'")  # pins: the connection is reset when it leaves
    with psycopg.connect(dsn(proc), autocommit=True) as conn:  # the same, only connection
        assert scalar(conn, INIT_FLAG) == "on"


def test_init_query_survives_failed_set(start_sluice: StartSluice) -> None:
    proc = start_sluice(
        pool={"max_connections": 1, "init_query": "select set_config('my.flag', 'on', false)"}
    )
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        assert scalar(conn, INIT_FLAG) == "on"
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("set statement_timeout = 'soon'")  # a tracked SET the server refuses
    with psycopg.connect(dsn(proc), autocommit=True) as conn:  # the same, only connection
        assert scalar(conn, INIT_FLAG) == "on"


def test_max_connections_percent(start_sluice: StartSluice, pg: PgCluster) -> None:
    no_app_backends(pg)
    expected = pg.max_connections * 10 // 100
    proc = start_sluice(pool={"max_connections": "10%", "borrow_timeout": 30})
    with BackendWatch(pg) as watch:
        pids = asyncio.run(hold_backends(proc, expected + 10, 1.0))
    assert len(set(pids)) == expected
    assert watch.peak == expected


def test_max_idle_connections(start_sluice: StartSluice, pg: PgCluster) -> None:
    no_app_backends(pg)
    proc = start_sluice(pool={"max_connections": 10, "max_idle_connections": 2})
    with BackendWatch(pg) as watch:
        pids = asyncio.run(hold_backends(proc, 8, 0.5))
    assert len(set(pids)) == 8
    assert watch.peak == 8
    # the excess is closed by maintenance once it has been idle for the grace period
    settle = IDLE_EXCESS_GRACE + 5
    assert wait_for(lambda: pg.backend_count(user=APP_USER) == 2, timeout=settle, interval=0.2)
