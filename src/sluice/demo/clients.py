"""Many short-lived clients at once, the way a fleet of serverless functions makes them.

Each client connects, asks which backend serves it, writes one row and counts
rows inside a transaction, and disconnects. It times its connection and each
query and records what went wrong instead of raising, so one failure never
hides the others. A round starts every client at once and waits up to a
deadline; clients still running then are cancelled and counted as timed out,
which keeps the demo bounded whatever the proxy does. A poller samples the
server's backend count (through psql, in a thread) while a round runs.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from sluice.dbserver.postgres import PgCluster

TOO_MANY_CLIENTS = "too many clients"
_TOO_MANY_TEXTS = ("too many clients", "remaining connection slots are reserved")

READ_SQL = "SELECT pg_backend_pid()"
WRITE_SQL = (
    "INSERT INTO demo_events (round, client, backend_pid)"
    " VALUES (%s, %s, pg_backend_pid()) RETURNING backend_pid"
)
COUNT_SQL = "SELECT count(*) FROM demo_events WHERE round = %s"
QUERIES_PER_CLIENT = 3  # READ_SQL, then WRITE_SQL and COUNT_SQL in one transaction


@dataclass
class RoundResult:
    """What the clients of one or more rounds saw."""

    clients: int = 0
    served: int = 0
    queries: int = 0
    elapsed: float = 0.0
    connect_times: list[float] = field(default_factory=list)
    query_times: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    backend_pids: set[int] = field(default_factory=set)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: RoundResult) -> None:
        self.clients += other.clients
        self.served += other.served
        self.queries += other.queries
        self.elapsed += other.elapsed
        self.connect_times += other.connect_times
        self.query_times += other.query_times
        self.errors.update(other.errors)
        self.backend_pids |= other.backend_pids


def classify(exc: BaseException) -> str:
    """A short, password-free label for a failure; PostgreSQL's refusals for lack of slots
    share one (by their text: Sluice's borrow timeout has the same SQLSTATE, 53300)."""
    text = str(exc).strip()
    if any(marker in text for marker in _TOO_MANY_TEXTS):
        return TOO_MANY_CLIENTS
    first_line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first_line}"[:160]


async def run_round(conninfo: str, clients: int, round_no: int, timeout: float) -> RoundResult:
    """Start `clients` clients at once; wait for them at most `timeout` seconds."""
    result = RoundResult(clients=clients)
    start = time.perf_counter()
    tasks = [asyncio.create_task(_client(conninfo, round_no, n, result)) for n in range(clients)]
    try:
        await asyncio.wait(tasks, timeout=timeout)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for the finished ones
        await asyncio.wait(tasks, timeout=5.0)
    result.elapsed = time.perf_counter() - start
    late = sum(1 for task in tasks if task.cancelled())
    if late:
        result.errors[f"still running after the {timeout:g}s round deadline"] += late
    return result


async def _client(conninfo: str, round_no: int, client_no: int, result: RoundResult) -> None:
    start = time.perf_counter()
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except (psycopg.Error, OSError) as exc:
        result.errors[classify(exc)] += 1
        return
    result.connect_times.append(time.perf_counter() - start)
    try:
        async with conn:  # closes the connection, whatever happens inside
            await _work(conn, round_no, client_no, result)
    except (psycopg.Error, OSError) as exc:
        result.errors[classify(exc)] += 1
        return
    result.served += 1


async def _work(
    conn: psycopg.AsyncConnection[Any], round_no: int, client_no: int, result: RoundResult
) -> None:
    result.backend_pids.add(int(await _query(conn, result, READ_SQL)))
    async with conn.transaction():
        result.backend_pids.add(int(await _query(conn, result, WRITE_SQL, (round_no, client_no))))
        await _query(conn, result, COUNT_SQL, (round_no,))


async def _query(
    conn: psycopg.AsyncConnection[Any],
    result: RoundResult,
    sql: str,
    params: Sequence[object] | None = None,
) -> Any:
    """Run one statement, time it, and return the first column of its first row."""
    start = time.perf_counter()
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    result.query_times.append(time.perf_counter() - start)
    result.queries += 1
    if row is None:
        raise psycopg.DataError(f"no row from {sql.split()[0]}")
    return row[0]


class BackendPoller:
    """Samples the server's client backends for one user and database while it runs."""

    def __init__(self, pg: PgCluster, user: str, database: str, interval: float = 0.1) -> None:
        self.pg = pg
        self.user = user
        self.database = database
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BackendPoller:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await self._sample()
            await asyncio.sleep(self.interval)

    async def _sample(self) -> None:
        try:
            count = await asyncio.to_thread(self.pg.backend_count, self.user, self.database)
        except (RuntimeError, subprocess.TimeoutExpired):
            return  # psql itself may be refused while the server is full: skip this sample
        self.samples += 1
        self.peak = max(self.peak, count)
