"""Hold many idle client connections open on a proxy and weigh them in its RSS.

Each client is a minimal raw-protocol PostgreSQL client: startup packet, a
real SCRAM-SHA-256 login (`ScramClient`, whose key cache makes the PBKDF2 step
cheap after the first login, since the proxy's salt is fixed), then it reads
until ReadyForQuery and stays silent. Logins run `concurrency` at a time so
the proxy's listen backlog never overflows. The proxy's VmRSS is read once a
first client has run a query (pools, caches and imports warmed up) and again
when all clients are in and the proxy has settled; the difference divided by
the clients opened is the cost of an idle client. A sample of the idle clients
then runs `SELECT 1`, to show they were really usable and not half-open.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import sluice.wire.pg.messages as m
from bench.procinfo import rss_bytes
from bench.systems import BENCH_DB, BENCH_USER, Endpoint
from sluice.wire.pg.framing import MessageReader
from sluice.wire.pg.scram import MECHANISM, ScramClient

_MAX_MESSAGE = 1 << 20
_LOGIN_TIMEOUT = 60.0
_QUERY_TIMEOUT = 30.0
_SAMPLE = 50
_MAX_ERRORS = 3


class LoginError(Exception):
    """The server refused or broke off a login or a query."""


@dataclass
class IdleResult:
    requested: int
    opened: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    rss_before: int = 0
    rss_after: int = 0
    sample_ok: int = 0
    sample_total: int = 0
    open_seconds: float = 0.0

    @property
    def bytes_per_client(self) -> float | None:
        if self.opened == 0:
            return None
        return (self.rss_after - self.rss_before) / self.opened

    def note_error(self, text: str) -> None:
        self.failed += 1
        if text not in self.errors and len(self.errors) < _MAX_ERRORS:
            self.errors.append(text)


class RawClient:
    """One PostgreSQL client connection, logged in with SCRAM over plain TCP."""

    __slots__ = ("frames", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = MessageReader(_MAX_MESSAGE)

    async def next_message(self) -> tuple[bytes, bytes]:
        """The next message as (type byte, body)."""
        while True:
            msg = self.frames.next()
            if msg is not None:
                return msg[:1], msg[5:]
            data = await self.reader.read(65536)
            if not data:
                raise LoginError("server closed the connection")
            self.frames.feed(data)

    async def login(self, user: str, password: str, database: str) -> None:
        self.writer.write(m.startup_message({"user": user, "database": database}))
        scram = ScramClient(user, password)
        while True:
            kind, body = await self.next_message()
            if kind == b"R":
                self._auth_step(scram, body)
            elif kind == b"E":
                raise LoginError(m.parse_error_fields(body).get("M", "error"))
            elif kind == b"Z":
                return

    def _auth_step(self, scram: ScramClient, body: bytes) -> None:
        code, payload = m.parse_auth(body)
        if code == m.AUTH_SASL:
            if MECHANISM not in m.parse_sasl_mechanisms(payload):
                raise LoginError("server does not offer SCRAM-SHA-256")
            self.writer.write(m.sasl_initial_response(MECHANISM, scram.client_first()))
        elif code == m.AUTH_SASL_CONTINUE:
            self.writer.write(m.password_message(scram.handle_server_first(payload)))
        elif code == m.AUTH_SASL_FINAL:
            scram.verify_server_final(payload)
        elif code != m.AUTH_OK:
            raise LoginError(f"unexpected authentication request {code}")

    async def select_one(self) -> None:
        self.writer.write(m.query("SELECT 1"))
        while True:
            kind, body = await self.next_message()
            if kind == b"E":
                raise LoginError(m.parse_error_fields(body).get("M", "error"))
            if kind == b"Z":
                return

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(m.TERMINATE)
            self.writer.close()


async def connect(endpoint: Endpoint, password: str) -> RawClient:
    async with asyncio.timeout(_LOGIN_TIMEOUT):
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        client = RawClient(reader, writer)
        try:
            await client.login(BENCH_USER, password, BENCH_DB)
        except BaseException:
            writer.close()
            raise
        return client


async def _open_many(
    endpoint: Endpoint, password: str, result: IdleResult, concurrency: int
) -> list[RawClient]:
    clients: list[RawClient] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            try:
                clients.append(await connect(endpoint, password))
            except Exception as exc:  # one failed login must not stop the others
                result.note_error(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one() for _ in range(result.requested)))
    result.opened = len(clients)
    return clients


async def _sample_queries(clients: list[RawClient], result: IdleResult) -> None:
    sample = clients[:: max(1, len(clients) // _SAMPLE)][:_SAMPLE]
    result.sample_total = len(sample)
    for client in sample:
        try:
            async with asyncio.timeout(_QUERY_TIMEOUT):
                await client.select_one()
            result.sample_ok += 1
        except (OSError, TimeoutError, LoginError) as exc:
            result.note_error(f"idle client query: {type(exc).__name__}: {exc}")


async def hold_idle(
    endpoint: Endpoint, password: str, count: int, concurrency: int = 100, settle: float = 2.0
) -> IdleResult:
    """Open `count` idle clients on `endpoint`, measure its RSS growth, then close them all."""
    assert endpoint.pid is not None
    result = IdleResult(requested=count)
    first = await connect(endpoint, password)
    clients: list[RawClient] = [first]
    try:
        await first.select_one()
        await asyncio.sleep(settle)
        result.rss_before = rss_bytes(endpoint.pid)
        started = time.monotonic()
        clients += await _open_many(endpoint, password, result, concurrency)
        result.open_seconds = time.monotonic() - started
        await asyncio.sleep(settle)
        result.rss_after = rss_bytes(endpoint.pid)
        await _sample_queries(clients[1:], result)
    finally:
        for client in clients:
            client.close()
        await asyncio.sleep(0.5)
    return result
