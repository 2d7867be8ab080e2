"""Which session state moves with a client, and which ties it to its connection.

Transaction pooling lends a client a different backend connection for each
transaction. Settings that drivers send at startup or with SET (application
name, time zone, search path, date style, float digits) must follow the client
from connection to connection without pinning it, and must never leak to the
clients that use those connections next. State that cannot be carried over
(SQL prepared statements, temp tables, session advisory locks, LISTEN, cursors
WITH HOLD, SET of an untracked parameter) must pin the client, keep working
for it, be logged with its reason, and be wiped by the reset when it leaves.

Pools here have two connections and more than two clients, so connections are
shared; `hold_other` makes a second client take the connection a client just
released, forcing it onto the other one.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn
from sluice.dbserver.postgres import PgCluster
from sluice.devtools.runner import SluiceProcess

StartSluice = Callable[..., SluiceProcess]
Conn = psycopg.Connection[tuple[Any, ...]]

SETTINGS = (
    "select current_setting('application_name'), current_setting('timezone'), "
    "current_setting('search_path'), current_setting('datestyle'), "
    "current_setting('extra_float_digits')"
)
PID = "select pg_backend_pid()"


def row(conn: Conn, sql: str) -> tuple[Any, ...]:
    found = conn.execute(sql).fetchone()
    assert found is not None
    return found


def scalar(conn: Conn, sql: str) -> Any:
    return row(conn, sql)[0]


def start_small(start_sluice: StartSluice) -> SluiceProcess:
    return start_sluice(pool={"max_connections": 2, "borrow_timeout": 20})


def pin_lines(proc: SluiceProcess) -> list[str]:
    return [line for line in proc.log_text().splitlines() if "pinned" in line]


@contextmanager
def hold_other(conn: Conn) -> Iterator[int]:
    """Keep `conn` inside a transaction (so it holds a backend); yield that backend's pid."""
    with conn.transaction():
        yield scalar(conn, PID)


def defaults(pg: PgCluster) -> tuple[Any, ...]:
    """The settings of a fresh session straight on the server (no startup options)."""
    with psycopg.connect(pg.dsn(APP_USER, APP_PASSWORD, APP_DB)) as conn:
        return row(conn, SETTINGS)


# ---------------------------------------------------------------- must not pin


async def _settings_client(
    connect: Callable[[], Any], expected: tuple[Any, ...], pids: set[int]
) -> None:
    conn = await connect()
    try:
        for i in range(25):
            if isinstance(conn, asyncpg.Connection):
                if i % 2:
                    async with conn.transaction():
                        got = tuple(await conn.fetchrow(SETTINGS))
                        pids.add(await conn.fetchval(PID))
                else:
                    got = tuple(await conn.fetchrow(SETTINGS))
            else:
                async with conn.transaction():
                    got = await (await conn.execute(SETTINGS)).fetchone()
                    pids.add((await (await conn.execute(PID)).fetchone())[0])
            assert got == expected
            await asyncio.sleep(0.001 * (i % 3))
    finally:
        await conn.close()


def test_startup_parameters_follow_the_client(start_sluice: StartSluice, pg: PgCluster) -> None:
    proc = start_small(start_sluice)
    base_settings = defaults(pg)
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    base = {"host": host, "port": int(port), "user": APP_USER, "password": APP_PASSWORD}

    def apg(**settings: str) -> Callable[[], Any]:
        return lambda: asyncpg.connect(
            **base, database=APP_DB, ssl=False, server_settings=settings, timeout=20
        )

    def pg3(**kwargs: Any) -> Callable[[], Any]:
        return lambda: psycopg.AsyncConnection.connect(dsn(proc), **kwargs)

    clients = [
        (
            apg(
                application_name="alpha",
                TimeZone="Asia/Tokyo",
                DateStyle="SQL, DMY",
                extra_float_digits="1",
            ),
            ("alpha", "Asia/Tokyo", base_settings[2], "SQL, DMY", "1"),
        ),
        (
            apg(application_name="beta", TimeZone="America/Lima", extra_float_digits="-2"),
            ("beta", "America/Lima", *base_settings[2:4], "-2"),
        ),
        (
            pg3(application_name="gamma", options="-c TimeZone=Europe/Oslo -c DateStyle=German"),
            ("gamma", "Europe/Oslo", base_settings[2], "German, DMY", base_settings[4]),
        ),
        (pg3(), base_settings),
    ]

    async def run() -> set[int]:
        pids: set[int] = set()
        async with asyncio.timeout(60):
            await asyncio.gather(*(_settings_client(c, exp, pids) for c, exp in clients))
        return pids

    pids = asyncio.run(run())
    assert len(pids) <= 2  # four clients took turns on two connections
    assert pin_lines(proc) == []


def test_startup_search_path_follows_the_client(start_sluice: StartSluice, pg: PgCluster) -> None:
    proc = start_small(start_sluice)
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    base = defaults(pg)[2]

    async def apg_client() -> None:
        conn = await asyncpg.connect(
            host=host,
            port=int(port),
            user=APP_USER,
            password=APP_PASSWORD,
            database=APP_DB,
            ssl=False,
            server_settings={"search_path": "sa, public"},
        )
        try:
            for _ in range(10):
                async with conn.transaction():
                    assert await conn.fetchval("show search_path") == "sa, public"
                await asyncio.sleep(0)
        finally:
            await conn.close()

    async def pg3_client(options: str, expected: str) -> None:
        async with await psycopg.AsyncConnection.connect(dsn(proc), options=options) as conn:
            for _ in range(10):
                async with conn.transaction():
                    cur = await conn.execute("show search_path")
                    assert await cur.fetchone() == (expected,)
                await asyncio.sleep(0)

    async def run() -> None:
        async with asyncio.timeout(30):
            await asyncio.gather(
                apg_client(),
                pg3_client("-c search_path=sg,public", "sg,public"),
                pg3_client("", base),
            )

    asyncio.run(run())
    assert pin_lines(proc) == []


def _set_client(
    proc: SluiceProcess, sets: list[str], expected: tuple[Any, ...], errors: list[BaseException]
) -> None:
    try:
        with psycopg.connect(dsn(proc), autocommit=True) as conn:
            for sql in sets:
                conn.execute(sql)
            for i in range(30):
                if i % 2:
                    with conn.transaction():
                        assert row(conn, SETTINGS) == expected
                        conn.execute("select pg_sleep(0.001)")
                else:
                    assert row(conn, SETTINGS) == expected
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_tracked_set_outside_transaction_follows_the_client(
    start_sluice: StartSluice, pg: PgCluster
) -> None:
    proc = start_small(start_sluice)
    base = defaults(pg)
    plans = [
        (
            [
                "set application_name = 'set_a'",
                "SET TIME ZONE 'Asia/Tokyo'",
                "set search_path to sa, public",
                "set datestyle = 'SQL, DMY'",
                "set extra_float_digits = 0",
            ],
            ("set_a", "Asia/Tokyo", "sa, public", "SQL, DMY", "0"),
        ),
        (
            ["set application_name to 'set_b'", "set timezone = 'Africa/Cairo'"],
            ("set_b", "Africa/Cairo", *base[2:]),
        ),
        ([], base),
    ]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_set_client, args=(proc, sets, exp, errors)) for sets, exp in plans
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert pin_lines(proc) == []
    with psycopg.connect(dsn(proc)) as fresh:  # nothing leaked into the pool
        assert row(fresh, SETTINGS) == base


def test_reset_and_set_default_restore_startup_values(start_sluice: StartSluice) -> None:
    proc = start_small(start_sluice)
    start: dict[str, Any] = {"application_name": "start_app", "options": "-c TimeZone=Asia/Tokyo"}
    want = ("start_app", "Asia/Tokyo")
    check = "select current_setting('application_name'), current_setting('timezone')"
    with (
        psycopg.connect(dsn(proc), autocommit=True, **start) as conn,
        psycopg.connect(dsn(proc), autocommit=True) as other,
    ):
        assert row(conn, check) == want
        conn.execute("set application_name = 'changed'")
        conn.execute("set timezone = 'Europe/Rome'")
        assert row(conn, check) == ("changed", "Europe/Rome")
        conn.execute("reset application_name")
        conn.execute("set timezone to default")
        assert row(conn, check) == want  # on the same connection
        for _ in range(3):
            with hold_other(other):  # forces the client onto the other connection
                assert row(conn, check) == want
            assert row(conn, check) == want
        conn.execute("set timezone = 'Europe/Rome'")
        conn.execute("reset all")
        assert row(conn, check) == want
        with hold_other(other):
            assert row(conn, check) == want
        assert scalar(other, "show application_name") == ""
    assert pin_lines(proc) == []


def test_reset_without_startup_value(start_sluice: StartSluice, pg: PgCluster) -> None:
    proc = start_small(start_sluice)
    base = defaults(pg)
    with (
        psycopg.connect(dsn(proc), autocommit=True) as conn,
        psycopg.connect(dsn(proc), autocommit=True) as other,
    ):
        conn.execute("set search_path = pinless, public")
        conn.execute("set timezone = 'Asia/Dubai'")
        with hold_other(other):
            assert row(conn, SETTINGS)[1:3] == ("Asia/Dubai", "pinless, public")
        conn.execute("reset search_path")
        conn.execute("set time zone default")
        assert row(conn, SETTINGS) == base
        for _ in range(3):
            with hold_other(other):
                assert row(conn, SETTINGS) == base
            assert row(conn, SETTINGS) == base
    assert pin_lines(proc) == []


def test_set_in_rolled_back_transaction_is_undone(start_sluice: StartSluice) -> None:
    proc = start_small(start_sluice)
    with (
        psycopg.connect(dsn(proc), autocommit=True) as conn,
        psycopg.connect(dsn(proc), autocommit=True) as other,
    ):
        conn.execute("set timezone = 'Asia/Tokyo'")
        with conn.transaction(force_rollback=True):
            conn.execute("set timezone = 'Asia/Kolkata'")
            assert scalar(conn, "show timezone") == "Asia/Kolkata"
        assert scalar(conn, "show timezone") == "Asia/Tokyo"
        for _ in range(3):
            with hold_other(other):  # forces the client onto the other connection
                assert scalar(conn, "show timezone") == "Asia/Tokyo"
            assert scalar(conn, "show timezone") == "Asia/Tokyo"
    assert pin_lines(proc) == []


def test_set_in_committed_transaction_stays(start_sluice: StartSluice, pg: PgCluster) -> None:
    proc = start_small(start_sluice)
    _, base_tz, base_path, *_ = defaults(pg)
    with (
        psycopg.connect(dsn(proc), autocommit=True) as conn,
        psycopg.connect(dsn(proc), autocommit=True) as other,
    ):
        with conn.transaction():
            conn.execute("set timezone = 'Asia/Seoul'")
            conn.execute("set local search_path = only_this_transaction")
        for _ in range(3):
            with hold_other(other):  # forces the client onto the other connection
                assert row(conn, SETTINGS)[1:3] == ("Asia/Seoul", base_path)
            assert scalar(conn, "show timezone") == "Asia/Seoul"
            assert scalar(other, "show timezone") == base_tz
    assert pin_lines(proc) == []


# ---------------------------------------------------------------- must pin


@dataclass(frozen=True)
class PinCase:
    reason: str  # as logged
    setup: tuple[str, ...]  # run by the pinned client, outside a transaction
    use: str  # run again in later transactions; its first column at round i is used(i)
    used: Callable[[int], Any]
    others: str  # run by another client meanwhile: it must not see the state
    others_see: Any
    after: str  # run on the same backend by a later client
    after_sees: Any
    reused: bool = True  # False: the backend is closed instead (a temporary schema stays)


PIN_CASES = [
    PinCase(
        "PREPARE",
        ("prepare pin_q (int) as select $1 * 3",),
        "execute pin_q (5)",
        lambda i: 15,
        "select count(*) from pg_prepared_statements where name = 'pin_q'",
        0,
        "select count(*) from pg_prepared_statements where name = 'pin_q'",
        0,
    ),
    PinCase(
        "temporary object",
        ("create temp table pin_tmp (x int)",),
        "with ins as (insert into pin_tmp values (1) returning x) select count(*) + 1 from pin_tmp",
        lambda i: i + 1,
        "select to_regclass('pin_tmp') is null",
        True,
        "select to_regclass('pin_tmp') is null and pg_my_temp_schema() = 0",
        True,
        reused=False,
    ),
    PinCase(
        "session advisory lock",
        ("select pg_advisory_lock(4242)",),
        "select count(*) from pg_locks where locktype = 'advisory' and objid = 4242 "
        "and pid = pg_backend_pid() and granted",
        lambda i: 1,
        "select pg_try_advisory_xact_lock(4242)",
        False,
        "select pg_try_advisory_xact_lock(4242)",
        True,
    ),
    PinCase(
        "cursor WITH HOLD",
        ("declare pin_cur cursor with hold for select g from generate_series(1, 100) g",),
        "fetch 1 from pin_cur",
        lambda i: i + 1,
        "select count(*) from pg_cursors where name = 'pin_cur'",
        0,
        "select count(*) from pg_cursors where name = 'pin_cur'",
        0,
    ),
    PinCase(
        "SET work_mem",
        ("set work_mem = '8MB'",),
        "show work_mem",
        lambda i: "8MB",
        "show work_mem",
        "4MB",
        "show work_mem",
        "4MB",
    ),
]


def _assert_pinned_logged(proc: SluiceProcess, reason: str) -> None:
    pattern = re.compile(r"pinned.*" + re.escape(reason))
    assert any(pattern.search(line) for line in pin_lines(proc)), proc.log_tail(20)


def _after_reset(proc: SluiceProcess, pinned_pid: int, sql: str, reused: bool = True) -> Any:
    """Run `sql` on the backend the pinned client had, once it is back in the pool.

    Two clients inside transactions hold both connections of the pool, so one of
    them has that backend (the borrow waits while the reset runs). A backend that
    had a temporary schema is closed instead: `sql` then runs on both new ones.
    """
    with (
        psycopg.connect(dsn(proc), autocommit=True) as one,
        psycopg.connect(dsn(proc), autocommit=True) as two,
        one.transaction(),
        two.transaction(),
    ):
        by_pid = {scalar(one, PID): one, scalar(two, PID): two}
        if not reused:
            assert pinned_pid not in by_pid, "a backend with a temporary schema was lent again"
            seen = {scalar(conn, sql) for conn in by_pid.values()}
            assert len(seen) == 1
            return seen.pop()
        assert pinned_pid in by_pid, "the pinned client's backend was not reused after reset"
        return scalar(by_pid[pinned_pid], sql)


@pytest.mark.parametrize("case", PIN_CASES, ids=[c.reason for c in PIN_CASES])
def test_session_state_pins_and_is_reset(start_sluice: StartSluice, case: PinCase) -> None:
    proc = start_small(start_sluice)
    with psycopg.connect(dsn(proc), autocommit=True) as other:
        with psycopg.connect(dsn(proc), autocommit=True) as pinned:
            for sql in case.setup:
                pinned.execute(sql)
            pid = scalar(pinned, PID)
            for i in range(6):
                with hold_other(other) as other_pid:  # the other connection, meanwhile
                    assert other_pid != pid
                    assert scalar(other, case.others) == case.others_see
                    with pinned.transaction():
                        assert scalar(pinned, case.use) == case.used(2 * i)
                        assert scalar(pinned, PID) == pid
                assert scalar(pinned, case.use) == case.used(2 * i + 1)
                assert scalar(other, PID) != pid
            _assert_pinned_logged(proc, case.reason)
        assert _after_reset(proc, pid, case.after, case.reused) == case.after_sees


def test_listen_pins_and_notifications_arrive(start_sluice: StartSluice) -> None:
    proc = start_small(start_sluice)
    with psycopg.connect(dsn(proc), autocommit=True) as other:
        with psycopg.connect(dsn(proc), autocommit=True) as listener:
            listener.execute("listen pin_chan")
            pid = scalar(listener, PID)
            for i in range(5):
                with hold_other(other):
                    assert scalar(listener, PID) == pid
                other.execute("select pg_notify('pin_chan', %s)", (f"msg {i}",))
                got = list(listener.notifies(timeout=5, stop_after=1))
                assert [(n.channel, n.payload) for n in got] == [("pin_chan", f"msg {i}")]
            _assert_pinned_logged(proc, "LISTEN")
        assert _after_reset(proc, pid, "select count(*) from pg_listening_channels()") == 0
