"""Large results stream with backpressure; prepared statements are shared and bounded.

A client that reads slowly must not make the proxy hold the result: the proxy
stops reading from the database while the client's socket is full. Protocol-level
prepared statements from many clients map onto one server-side statement per
distinct query, and each connection keeps at most `max_prepared_statements`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER, dsn
from rawpg import RawClient
from sluice.devtools.runner import SluiceProcess
from sluice.wire.pg import messages as m

pytestmark = pytest.mark.timeout(120)

ROWS = 60_000
ROW_BYTES = 2_000  # a 120 MB result


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def count_rows(client: RawClient) -> int:
    """Read a whole result off the socket, counting DataRows, without keeping it."""
    buf, rows = bytearray(), 0
    while True:
        chunk = client.sock.recv(1 << 20)
        assert chunk, "the proxy closed the connection mid-result"
        buf += chunk
        pos = 0
        while len(buf) - pos >= 5:
            kind = buf[pos]
            (length,) = struct.unpack_from("!I", buf, pos + 1)
            if len(buf) - pos < 1 + length:
                break
            if kind == ord("D"):
                rows += 1
            elif kind == ord("E"):
                raise AssertionError(m.parse_error_fields(bytes(buf[pos + 5 : pos + 1 + length])))
            elif kind == ord("Z"):
                return rows
            pos += 1 + length
        del buf[:pos]


def test_slow_reader_is_not_buffered(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice()
    client = RawClient(int(str(proc.proxies[0]["listen"]).rpartition(":")[2]), timeout=60)
    try:
        client.login()
        before = rss_bytes(proc.pid)
        client.send(m.query(f"select repeat('x', {ROW_BYTES}) from generate_series(1, {ROWS})"))
        time.sleep(3)  # read nothing: the database keeps producing, the proxy must hold back
        grown = rss_bytes(proc.pid) - before
        assert grown < 32 * 1024 * 1024, f"the proxy buffered {grown} bytes of the result"
        assert count_rows(client) == ROWS
    finally:
        client.close()
    with psycopg.connect(dsn(proc)) as conn:  # and the connection went back in order
        assert conn.execute("select 1").fetchone() == (1,)


def test_statements_are_evicted_and_prepared_again(
    start_sluice: Callable[..., SluiceProcess],
) -> None:
    proc = start_sluice(pool={"max_connections": 1, "max_prepared_statements": 3})
    queries = [f"select %s::int + {k}" for k in range(8)]
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        for round_ in range(4):
            for k, sql in enumerate(queries):
                row = conn.execute(sql, (round_,), prepare=True).fetchone()
                assert row == (round_ + k,)
        count = conn.execute("select count(*) from pg_prepared_statements").fetchone()
    assert count is not None and count[0] <= 3


def test_clients_share_one_server_statement(start_sluice: Callable[..., SluiceProcess]) -> None:
    proc = start_sluice(pool={"max_connections": 1})
    port = int(str(proc.proxies[0]["listen"]).rpartition(":")[2])
    sql = "select $1::int * 3 as tripled"

    async def run() -> list[int]:
        results = []
        for n in range(10):  # ten short-lived clients, as functions would be
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=port,
                user=APP_USER,
                password=APP_PASSWORD,
                database=APP_DB,
                ssl=False,
            )
            try:
                results.append(await conn.fetchval(sql, n))
            finally:
                await conn.close()
        return results

    assert asyncio.run(run()) == [n * 3 for n in range(10)]
    with psycopg.connect(dsn(proc), autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_prepared_statements where statement = %s", (sql,)
        ).fetchone()
    assert row == (1,)
