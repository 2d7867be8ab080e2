"""Session mode: a client keeps one server connection, and sees it as it would directly.

- The BackendKeyData pid is its server's: what `pg_backend_pid()` answers and
  what a NotificationResponse names as the sender (libraries compare the two).
  The secret is Sluice's own, so a cancel still goes through Sluice, to that
  connection only.
- Protocol-level statement names pass through unchanged: SQL `EXECUTE name` and
  `DEALLOCATE name` find a statement the client prepared with Parse.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(120)

StartSluice = Callable[..., SluiceProcess]


def _session(start_sluice: StartSluice) -> SluiceProcess:
    return start_sluice(pool={"mode": "session", "max_connections": 4})


def _port(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


async def _asyncpg(proc: SluiceProcess) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1",
        port=_port(proc),
        user=APP_USER,
        password=APP_PASSWORD,
        database=APP_DB,
        ssl=False,
        timeout=30,
    )


def test_backend_pid_is_the_servers(start_sluice: StartSluice) -> None:
    proc = _session(start_sluice)
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        pid = conn.info.backend_pid
        assert conn.execute("select pg_backend_pid()").fetchone() == (pid,)
        conn.execute("LISTEN session_chan")
        conn.execute("NOTIFY session_chan, 'hello'")
        notice = next(conn.notifies(timeout=5, stop_after=1))
        assert (notice.channel, notice.payload, notice.pid) == ("session_chan", "hello", pid)
        with psycopg.connect(dsn(proc), autocommit=True) as other:
            assert other.info.backend_pid not in (0, pid)
            assert other.execute("select pg_backend_pid()").fetchone() == (other.info.backend_pid,)


def test_asyncpg_listener_sees_its_own_pid(start_sluice: StartSluice) -> None:
    proc = _session(start_sluice)

    async def run() -> tuple[int, int, int]:
        con = await _asyncpg(proc)
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await con.add_listener("session_chan", lambda _c, pid, _ch, _p: got.set_result(pid))
        await con.execute("NOTIFY session_chan")
        sender = await asyncio.wait_for(got, 5)
        backend = await con.fetchval("select pg_backend_pid()")
        await con.close()
        return con.get_server_pid(), backend, sender

    server_pid, backend, sender = asyncio.run(run())
    assert server_pid == backend == sender


def test_cancel_reaches_that_connection_only(start_sluice: StartSluice) -> None:
    proc = _session(start_sluice)
    with (
        psycopg.connect(dsn(proc), autocommit=True) as victim,
        psycopg.connect(dsn(proc), autocommit=True) as bystander,
    ):
        outcome: dict[str, Any] = {}

        def sleep(conn: psycopg.Connection[Any], key: str, seconds: float) -> None:
            try:
                conn.execute(f"select pg_sleep({seconds})")
                outcome[key] = "done"
            except psycopg.Error as exc:
                outcome[key] = exc.sqlstate

        threads = [
            threading.Thread(target=sleep, args=(victim, "victim", 30)),
            threading.Thread(target=sleep, args=(bystander, "bystander", 1.5)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        victim.cancel_safe(timeout=5)
        for thread in threads:
            thread.join(10)
        assert outcome == {"victim": "57014", "bystander": "done"}
        assert victim.execute("select 1").fetchone() == (1,)


def test_statement_names_pass_through(start_sluice: StartSluice) -> None:
    proc = _session(start_sluice)

    async def run() -> list[Any]:
        con = await _asyncpg(proc)
        statement = await con.prepare("select 1 + $1::int", name="my_stmt")
        seen: list[Any] = [await statement.fetchval(1)]
        mine = "select count(*) from pg_prepared_statements where name = 'my_stmt'"
        seen.append(await con.fetchval(mine))
        seen.append(await con.execute("EXECUTE my_stmt(41)"))
        seen.append(await con.execute("DEALLOCATE my_stmt"))
        seen.append(await con.fetchval(mine))
        await con.close()
        return seen

    assert asyncio.run(run()) == [2, 1, "SELECT 1", "DEALLOCATE", 0]
