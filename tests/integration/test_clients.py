"""Real clients through the proxy in transaction pooling mode.

Each test drives one client library or tool (psql, psycopg 3 in plain,
prepared and pipeline modes, asyncpg, pgbench) through a `sluice proxy`
process in front of the session server, and checks results that only come out
right if every message reached the right backend and every reply came back to
the right client. Small pools (2 to 4 connections) with more clients than
connections force clients to move between backend connections, which is where
a transaction pooler breaks.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn
from sluice.devtools.runner import SluiceProcess

StartSluice = Callable[..., SluiceProcess]


def _host_port(proc: SluiceProcess) -> tuple[str, int]:
    host, _, port = str(proc.proxies[0]["listen"]).rpartition(":")
    return host, int(port)


def _tool_env() -> dict[str, str]:
    """The environment for psql/pgbench: no inherited PG* variables, the app password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = APP_PASSWORD
    return env


def _conn_args(proc: SluiceProcess) -> list[str]:
    host, port = _host_port(proc)
    return ["-h", host, "-p", str(port), "-U", APP_USER]


def psql(proc: SluiceProcess, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    """Run psql through the proxy (unaligned, tuples only, stop on error); return stdout."""
    cmd = ["psql", *_conn_args(proc), "-d", APP_DB, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run(
        [*cmd, *args],
        input=stdin,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"psql failed ({done.returncode}): {done.stderr}"
    return done.stdout


async def connect_async(proc: SluiceProcess, **kwargs: object) -> asyncpg.Connection:
    """An asyncpg connection through the proxy (asyncpg prepares every statement)."""
    host, port = _host_port(proc)
    return await asyncpg.connect(
        host=host,
        port=port,
        user=APP_USER,
        password=APP_PASSWORD,
        database=APP_DB,
        ssl=False,
        timeout=30,
        **kwargs,
    )


# ---------------------------------------------------------------- psql


def test_psql_queries_and_script(start_sluice: StartSluice, tmp_path: Path) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    assert psql(proc, "-c", "select 6 * 7").strip() == "42"
    out = psql(proc, "-c", "select 1; select 'two'; select 3")
    assert out.split() == ["1", "two", "3"]
    script = tmp_path / "script.sql"
    script.write_text(
        "drop table if exists psql_script;\n"
        "create table psql_script (id int primary key, v text);\n"
        "begin;\n"
        "insert into psql_script select g, 'v' || g from generate_series(1, 100) g;\n"
        "commit;\n"
        "begin;\n"
        "delete from psql_script where id > 50;\n"
        "rollback;\n"
        "select count(*), sum(id) from psql_script;\n"
        "select v from psql_script where id = 77;\n"
        "drop table psql_script;\n"
    )
    out = psql(proc, "-f", str(script))
    assert out.split() == ["100|5050", "v77"]


def test_psql_copy_in_and_out(start_sluice: StartSluice, tmp_path: Path) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    rows = [f"{i},name {i},{i * 1.5}" for i in range(1, 5001)]
    src = tmp_path / "in.csv"
    src.write_text("\n".join(rows) + "\n")
    out_file = tmp_path / "out.csv"
    psql(
        proc,
        "-c",
        "drop table if exists psql_copy",
        "-c",
        "create table psql_copy (id int, name text, score numeric)",
        "-c",
        f"\\copy psql_copy from '{src}' csv",
        "-c",
        f"\\copy (select * from psql_copy order by id) to '{out_file}' csv",
    )
    assert out_file.read_text().splitlines() == rows
    # COPY FROM STDIN fed by psql's own stdin, then COPY TO STDOUT on stdout
    stdin_rows = "".join(f"{i}\tpiped {i}\t{i}\n" for i in range(10001, 12001))
    psql(proc, "-c", "\\copy psql_copy from stdin", stdin=stdin_rows)
    out = psql(
        proc, "-c", "copy (select id, name from psql_copy where id > 10000 order by id) to stdout"
    )
    assert out.splitlines() == [f"{i}\tpiped {i}" for i in range(10001, 12001)]
    assert psql(proc, "-c", "select count(*), sum(id) from psql_copy").strip() == (
        f"7000|{sum(range(1, 5001)) + sum(range(10001, 12001))}"
    )
    psql(proc, "-c", "drop table psql_copy")


# ---------------------------------------------------------------- psycopg


def test_psycopg_autocommit_and_transactions(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    with psycopg.connect(dsn(proc), autocommit=True) as setup:
        setup.execute("drop table if exists pg3_tx")
        setup.execute("create table pg3_tx (id int primary key, v text)")
    with psycopg.connect(dsn(proc)) as conn:
        conn.execute("insert into pg3_tx values (%s, %s)", (1, "kept"))
        conn.commit()
        conn.execute("insert into pg3_tx values (%s, %s)", (2, "dropped"))
        conn.rollback()
        with conn.transaction():
            conn.execute("insert into pg3_tx values (3, 'block')")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("insert into pg3_tx values (4, 'failed')")
            conn.execute("select 1 / 0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select 2 + 2").fetchone() == (4,)
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("insert into pg3_tx values (1, 'dup')")
        rows = conn.execute("select id, v from pg3_tx order by id").fetchall()
        assert rows == [(1, "kept"), (3, "block")]
        conn.commit()
    with psycopg.connect(dsn(proc), autocommit=True) as other:
        assert other.execute("select count(*) from pg3_tx").fetchone() == (2,)
        other.execute("drop table pg3_tx")


def _churn(proc: SluiceProcess, stop: threading.Event, errors: list[BaseException]) -> None:
    """Keep borrowing connections so that the clients under test change backends."""
    try:
        with psycopg.connect(dsn(proc), autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("select pg_backend_pid(), pg_sleep(0.002)")
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("threshold", [None, 0])
def test_psycopg_prepared_across_connections(
    start_sluice: StartSluice, threshold: int | None
) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    stop, errors = threading.Event(), list[BaseException]()
    churners = [threading.Thread(target=_churn, args=(proc, stop, errors)) for _ in range(3)]
    for t in churners:
        t.start()
    pids: set[int] = set()
    try:
        with psycopg.connect(dsn(proc)) as conn, psycopg.connect(dsn(proc)) as holder:
            if threshold is not None:
                conn.prepare_threshold = threshold
            prepare = None if threshold is not None else True
            for i in range(60):
                if i % 2:  # take the connection the client just returned (LIFO): it must move
                    holder.execute("select 1")
                else:
                    holder.commit()
                with conn.transaction():
                    row = conn.execute(
                        "select %s::int * 3, pg_backend_pid()", (i,), prepare=prepare
                    ).fetchone()
                    assert row is not None and row[0] == i * 3
                    pids.add(row[1])
                    text = conn.execute(
                        "select %s::text || '-' || %s::text", (f"a{i}", i), prepare=prepare
                    ).fetchone()
                    assert text == (f"a{i}-{i}",)
            prepared = conn.execute(
                "select count(*) from pg_prepared_statements", prepare=False
            ).fetchone()
            assert prepared is not None and prepared[0] >= 1
    finally:
        stop.set()
        for t in churners:
            t.join(timeout=10)
    assert not errors, errors
    assert len(pids) == 2, f"the client never changed backend connection: {pids}"


def test_psycopg_pipeline(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        conn.execute("drop table if exists pg3_pipe")
        conn.execute("create table pg3_pipe (id int primary key, v text)")
        with conn.pipeline():
            curs = [conn.execute("select %s::int + 100", (i,)) for i in range(20)]
            conn.execute("insert into pg3_pipe values (%s, %s)", (1, "one"))
            conn.execute("insert into pg3_pipe values (%s, %s)", (2, "two"))
            last = conn.execute("select count(*) from pg3_pipe")
        assert [c.fetchone() for c in curs] == [(i + 100,) for i in range(20)]
        assert last.fetchone() == (2,)
        # an error in the middle: the statements before the failing sync point stay,
        # those after it are skipped by the server
        with pytest.raises(psycopg.errors.UniqueViolation), conn.pipeline() as p:
            conn.execute("insert into pg3_pipe values (%s, %s)", (3, "three"))
            p.sync()
            conn.execute("insert into pg3_pipe values (%s, %s)", (1, "dup"))
            conn.execute("insert into pg3_pipe values (%s, %s)", (4, "four"))
        assert conn.execute("select array_agg(id order by id) from pg3_pipe").fetchone() == (
            [1, 2, 3],
        )
        with conn.pipeline():
            after = conn.execute("select %s::text", ("usable",))
        assert after.fetchone() == ("usable",)
        conn.execute("drop table pg3_pipe")


def test_psycopg_copy_error_leaves_connection_usable(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 1, "borrow_timeout": 5})
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        conn.execute("drop table if exists pg3_copy")
        conn.execute("create table pg3_copy (x int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):  # noqa: SIM117
            with conn.cursor().copy("copy pg3_copy from stdin") as copy:
                for i in range(20000):
                    copy.write_row((i if i != 10000 else "bad",))
        assert conn.execute("select count(*) from pg3_copy").fetchone() == (0,)
        with conn.cursor().copy("copy pg3_copy from stdin") as copy:
            for i in range(3000):
                copy.write_row((i,))
        with psycopg.connect(dsn(proc), autocommit=True) as other:  # the only connection is free
            assert other.execute("select count(*), sum(x) from pg3_copy").fetchone() == (
                3000,
                sum(range(3000)),
            )
        out = conn.cursor().copy("copy (select x from pg3_copy order by x) to stdout")
        with out as copy:
            assert [int(r[0]) for r in copy.rows()] == list(range(3000))
        conn.execute("drop table pg3_copy")


def test_psycopg_pipeline_prepared_across_connections(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    stop, errors = threading.Event(), list[BaseException]()
    churners = [threading.Thread(target=_churn, args=(proc, stop, errors)) for _ in range(3)]
    for t in churners:
        t.start()
    pids: set[int] = set()
    try:
        with (
            psycopg.connect(dsn(proc), autocommit=True) as conn,
            psycopg.connect(dsn(proc)) as holder,
        ):
            for n in range(30):
                if n % 2:  # take the connection the client just returned (LIFO): it must move
                    holder.execute("select 1")
                else:
                    holder.commit()
                with conn.pipeline():
                    curs = [
                        conn.execute("select %s::int * 7", (n + i,), prepare=True) for i in range(5)
                    ]
                    pid = conn.execute("select pg_backend_pid()", prepare=True)
                    text = conn.execute("select %s::text || 'z'", (str(n),), prepare=True)
                assert [c.fetchone() for c in curs] == [((n + i) * 7,) for i in range(5)]
                assert text.fetchone() == (f"{n}z",)
                row = pid.fetchone()
                assert row is not None
                pids.add(row[0])
                if n % 10 == 9:
                    with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
                        conn.execute("select %s::int * 7", (1,), prepare=True)
                        conn.execute("select 1 / %s::int", (0,), prepare=True)
    finally:
        stop.set()
        for t in churners:
            t.join(timeout=10)
    assert not errors, errors
    assert len(pids) == 2, f"the client never changed backend connection: {pids}"


def test_large_result_streamed(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 2})
    query = "select g, repeat('x', 1000) from generate_series(1, 50000) g"
    with psycopg.connect(dsn(proc)) as conn:
        rows = conn.execute(query).fetchall()
        assert len(rows) == 50000
        assert all(r[0] == i + 1 and r[1] == "x" * 1000 for i, r in enumerate(rows))
        count = 0
        for n, (g, text) in enumerate(conn.cursor().stream(query), start=1):
            assert g == n and len(text) == 1000
            count += 1
        assert count == 50000
        huge = conn.execute("select repeat('y', 20000000)").fetchone()  # one 20 MB row
        assert huge is not None and huge[0] == "y" * 20000000
        assert conn.execute("select 'after'").fetchone() == ("after",)


# ---------------------------------------------------------------- asyncpg


async def _asyncpg_client(proc: SluiceProcess, cid: int) -> None:
    conn = await connect_async(proc)
    try:
        assert await conn.fetchval("select $1::int * 2", cid) == cid * 2
        rows = await conn.fetch("select g, $1::text from generate_series(1, $2::int) g", "c", 5)
        assert [tuple(r) for r in rows] == [(g, "c") for g in range(1, 6)]
        await conn.executemany(
            "insert into apg_many (client, n) values ($1, $2)", [(cid, n) for n in range(10)]
        )
        stmt = await conn.prepare("select sum(n)::int from apg_many where client = $1")
        for round_ in range(3):
            async with conn.transaction():
                await conn.execute("insert into apg_many (client, n) values ($1, 100)", cid)
                assert await stmt.fetchval(cid) == 45 + 100 * (round_ + 1)
        async with conn.transaction():
            seen = [
                r["n"]
                async for r in conn.cursor(
                    "select n from apg_many where client = $1 order by n", cid, prefetch=3
                )
            ]
        assert seen == [*range(10), 100, 100, 100]
        try:
            async with conn.transaction():
                await conn.execute("insert into apg_many (client, n) values ($1, 999)", cid)
                await conn.execute("select 1 / 0")
        except asyncpg.DivisionByZeroError:
            pass
        assert await stmt.fetchval(cid) == 345
    finally:
        await conn.close()


async def _asyncpg_many(proc: SluiceProcess, clients: int) -> None:
    setup = await connect_async(proc)
    await setup.execute("drop table if exists apg_many")
    await setup.execute("create table apg_many (client int, n int)")
    await setup.close()
    async with asyncio.timeout(90):
        await asyncio.gather(*(_asyncpg_client(proc, cid) for cid in range(clients)))
    check = await connect_async(proc)
    assert await check.fetchval("select count(*) from apg_many") == clients * 13
    await check.execute("drop table apg_many")
    await check.close()


def test_asyncpg_many_clients_small_pool(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 3, "borrow_timeout": 60})
    asyncio.run(_asyncpg_many(proc, 30))


# ---------------------------------------------------------------- pgbench


def _pgbench(proc: SluiceProcess, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        ["pgbench", *_conn_args(proc), *args, APP_DB],
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"pgbench {args} failed ({done.returncode}):\n{output}"
    return output


def _pgbench_counts(output: str) -> tuple[int, int]:
    """(transactions processed, failed transactions) from pgbench's report."""
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    failed = re.search(r"number of failed transactions: (\d+)", output)
    assert processed and failed, output
    return int(processed.group(1)), int(failed.group(1))


@pytest.mark.timeout(120)
def test_pgbench_through_transaction_pool(start_sluice: StartSluice) -> None:
    proc = start_sluice(pool={"max_connections": 4, "borrow_timeout": 30})
    _pgbench(proc, "-i", "-s", "1", "-q")
    runs = [
        ("-S", "-M", "simple"),
        ("-S", "-M", "extended"),
        ("-S", "-M", "prepared"),
        (),  # the default TPC-B-like script (updates in BEGIN ... END), simple protocol
        ("-M", "prepared"),
    ]
    for run in runs:
        # one thread per client: in -M prepared pgbench prepares with a blocking PQprepare,
        # which would stall the other clients of its thread (one of them holding the
        # connection inside BEGIN ... END) until the borrow timeout
        output = _pgbench(proc, *run, "-c", "8", "-j", "8", "-T", "3")
        processed, failed = _pgbench_counts(output)
        assert failed == 0, output
        assert processed > 100, output
    # every TPC-B transaction adds the same delta to one account, teller and branch
    out = psql(
        proc,
        "-c",
        "select (select sum(abalance) from pgbench_accounts), "
        "(select sum(tbalance) from pgbench_tellers), (select sum(bbalance) from pgbench_branches)",
    )
    balances = out.strip().split("|")
    assert len(set(balances)) == 1, balances
