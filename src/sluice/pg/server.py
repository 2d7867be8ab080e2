"""One connection from the proxy to a PostgreSQL server.

States (one owner, `ServerConn._set_state`):

    CONNECTING -> IDLE <-> ACTIVE -> CLOSED
                    \\________________/

CONNECTING covers TCP, the optional TLS upgrade, the startup packet, the
authentication exchange (SCRAM-SHA-256, md5 or cleartext, whichever the server
asks for) and the init query. IDLE connections sit in their pool. ACTIVE ones
are lent to a client session, which receives every reply through
`ResponseTracker.feed`. Every close states its reason in the log.

A connection on which a client may have created a custom (dotted) setting is
closed when that client leaves instead of going back to the pool: PostgreSQL
keeps such a placeholder variable in the session for good (RESET and DISCARD
ALL only empty it), so the next client's `SHOW myapp.x` would find it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from abc import abstractmethod
from typing import ClassVar, Final, Protocol, cast

from mypy_extensions import trait

from sluice.errors import ServerError
from sluice.net.endpoints import connect
from sluice.pg.guard import QuickMemory
from sluice.session.backend import BackendConn, BackendState
from sluice.session.views import ClientView
from sluice.wire.pg import messages as m
from sluice.wire.pg.framing import MessageReader
from sluice.wire.pg.login import LoginClient
from sluice.wire.pg.responses import QUERY_CHECK, QUERY_SKIP, ResponseTracker

log: Final = logging.getLogger("sluice.server")
# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CLOSED: Final = BackendState.CLOSED
_IDLE: Final = BackendState.IDLE


@trait
class ReplySink:
    """The calls a lent connection makes on its client for the server's replies. A mypyc
    trait, which the client session derives from: compiled, a call through a table (a
    call through a Protocol is a method lookup by name)."""

    __slots__ = ()  # (interpreted, a base without slots gives every session a __dict__)

    @abstractmethod
    def transport_write(self, data: bytes) -> None: ...

    @abstractmethod
    def server_idle(self, server: ServerConn) -> None: ...

    @abstractmethod
    def statement_described(self) -> None:
        """The connection answered a Describe the proxy sent (`ResponseTracker.described`)."""


class Borrower(ClientView, Protocol):
    """The client session a connection is lent to (`ClientSession`)."""

    def transport_write(self, data: bytes) -> None: ...

    def server_idle(self, server: ServerConn) -> None: ...

    def replay_failed(self, server: ServerConn, error: bytes) -> None: ...

    def server_lost(self, server: ServerConn) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class ServerConn(BackendConn[Borrower, ResponseTracker]):
    """A PostgreSQL backend connection: handshake as a coroutine, then a relay of replies."""

    goodbye: ClassVar[bytes] = m.TERMINATE

    __slots__ = (
        "_idle_waiter",
        "backend_secret",
        "baseline",
        "custom_setting",
        "leftover",
        "leftover_of",
        "login_user",
        "max_connections",
        "params",
        "params_dirty",
        "params_shared",
        "pid",
        "quick",
        "quick_sql",
        "reader",
        "retire",
        "server_params",
    )

    def __init__(self, pool_name: str, max_size: int) -> None:
        super().__init__(pool_name)
        self.tracker = ResponseTracker(max_size)
        self.reader: MessageReader | None = MessageReader(max_size)
        self.params: dict[str, bytes] = {}  # tracked settings as this connection has them
        # `params` is a read-only map of clients' shared settings (the values are the same,
        # so a borrow compares by identity): copied before any change (`own_params`)
        self.params_shared = False
        self.params_dirty = False  # True when unknown: reset everything before replaying
        self.custom_setting = ""  # a custom setting a client may have created here
        self.server_params: dict[str, str] = {}  # ParameterStatus seen at startup
        self.pid = 0
        self.backend_secret = 0
        self.max_connections = 0  # the server's max_connections, read at startup
        self.login_user = ""  # the role the proxy logged in as
        self.baseline: frozenset[tuple[str, str]] = frozenset()  # settings of init_query
        self.quick_sql = b""  # the quick state check's statement for this connection
        self.quick = QuickMemory()  # what its settings read as (guard.py)
        self.leftover = 0  # what a borrower may have left unseen (guard.SEQUENCES, CUSTOM)
        self.retire = ""  # why it must be closed rather than lent again, once detached
        self.leftover_of = 0  # that borrower's serial
        self._idle_waiter: asyncio.Future[None] | None = None

    def own_params(self) -> dict[str, bytes]:
        """`params`, a map of the connection's own (to be changed in place)."""
        if self.params_shared:
            self.params = dict(self.params)
            self.params_shared = False
        return self.params

    @property
    def backend_pid(self) -> int:
        return self.pid

    @property
    def prepared_count(self) -> int:
        return len(self.tracker.prepared)

    @property
    def broken(self) -> bool:
        # BackendConn's, where the tracker's type is known: compiled, its `idle` is a direct
        # call, not a lookup by name (the pool asks on every borrow and release)
        return self.state is _CLOSED or not self.tracker.idle

    # ---- the socket's protocol callbacks ----

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            tracker = self.tracker
            sink = cast(ReplySink, client)  # (every borrower is one)
            out = tracker.feed(data)
            if len(out):  # (a length read: the truth of bytes is a call, compiled)
                sink.transport_write(out)
            if tracker.replay_error is not None:
                client.replay_failed(self, tracker.replay_error)
            elif tracker.idle:
                sink.server_idle(self)
            elif tracker.described:
                tracker.described = False
                sink.statement_described()
            return
        if self.reader is not None:
            self.reader.feed(data)
            self._wake()
            return
        self._unsolicited(data)

    def _unsolicited(self, data: bytes) -> None:
        tracker = self.tracker
        expected = not tracker.idle  # replies to the proxy's own queries (a reset, a check)
        tracker.feed(data)
        if tracker.idle and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)
        elif self.state is _IDLE and tracker.idle and not expected:
            # an idle connection spoke on its own: a FATAL before the server goes away
            self.close("server sent data while idle (likely terminating)")

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.mark_lost()
        if self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_exception(ServerError("server connection lost"))
        self.notify_lost(was_open)

    def detach(self) -> None:
        super().detach()
        if self.custom_setting and self.state is not _CLOSED:
            # no RESET or DISCARD removes a placeholder variable: the next client would see it
            name = self.custom_setting
            self.close(f"a client created the custom setting {name}, which no reset removes")
        elif self.retire and self.state is not _CLOSED:
            self.close(self.retire)

    # ---- liveness check and injected queries ----

    async def check(self) -> bool:
        """Run an empty query; True if the server answered in time."""
        try:
            await self.run_silently("", timeout=5.0)
        except (ServerError, TimeoutError):
            return False
        return True

    async def run_silently(self, sql: str, timeout: float) -> None:
        """Run a query on an idle connection, swallowing its replies."""
        await self._run_own(QUERY_SKIP, sql, timeout)
        if self.tracker.swallowed_errors:
            self.tracker.swallowed_errors = 0
            raise ServerError(f"query {sql!r} failed on the server")

    async def read_rows(self, sql: str, timeout: float) -> list[bytes]:
        """Run a query on an idle connection; return its DataRow bodies."""
        await self._settle(timeout)  # rows of a check still running are not ours
        tracker = self.tracker
        tracker.check_rows, tracker.check_failed = [], False
        await self._run_own(QUERY_CHECK, sql, timeout)
        rows: list[bytes] = tracker.check_rows
        tracker.check_rows = []
        if tracker.check_failed:
            tracker.check_failed = False
            raise ServerError(f"query {sql[:40]!r}... failed on the server")
        return rows

    async def _settle(self, timeout: float) -> None:
        """Wait until the proxy's own queries still running (a state check) have answered."""
        if self.tracker.idle or self.state is _CLOSED:
            return
        self._idle_waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._idle_waiter, timeout)
        finally:
            self._idle_waiter = None

    async def _run_own(self, kind: int, sql: str, timeout: float) -> None:
        if self.state is _CLOSED or self.transport is None:
            raise ServerError("server connection closed")
        loop = asyncio.get_running_loop()
        self._idle_waiter = loop.create_future()
        self.tracker.push(kind)
        self.write(m.query(sql))
        try:
            await asyncio.wait_for(self._idle_waiter, timeout)
        finally:
            self._idle_waiter = None

    async def probe(self, sql: bytes, timeout: float) -> tuple[list[bytes | None], dict[str, str]]:
        """Run a query on an idle connection nobody borrows; its first row, or its error's
        fields (empty if none)."""
        if self.state is _CLOSED or self.transport is None:
            raise ServerError("server connection closed")
        self.reader = MessageReader(self.tracker.max_size)
        self.write(m.message(b"Q", sql + b"\x00"))
        row: list[bytes | None] = []
        error: dict[str, str] = {}
        try:
            async with asyncio.timeout(timeout):
                while (msg := await self._recv())[0:1] != b"Z":
                    if msg[0:1] == b"D" and not row:
                        row = m.parse_data_row(msg[5:])
                    elif msg[0:1] == b"E":
                        error = m.parse_error_fields(msg[5:])
        finally:
            self.reader = None
        return row, error

    # ---- handshake ----

    async def _recv(self) -> bytes:
        reader = self.reader
        assert reader is not None
        while True:
            msg = reader.next()
            if msg is not None:
                return msg
            if self.state is _CLOSED:
                raise ServerError("server closed the connection during startup")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def _read_byte(self) -> bytes:
        reader = self.reader
        assert reader is not None
        while reader.pending < 1:
            if self.state is _CLOSED:
                raise ServerError("server closed the connection during TLS negotiation")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return reader.take_rest()

    async def start_tls(self, ctx: ssl.SSLContext, server_name: str, required: bool) -> None:
        assert self.transport is not None
        self.write(LoginClient.ssl_request())
        if not LoginClient.tls_answer(await self._read_byte(), required):
            return
        assert self.transport is not None
        await self.transport.start_tls(ctx, server_side=False, server_hostname=server_name)

    async def login(self, user: str, password: str, database: str, init_query: str) -> None:
        """Startup and authentication; afterwards the connection is IDLE."""
        machine = LoginClient(user, password, database)
        self.write(machine.startup())
        while not machine.ready:
            answer = machine.feed(await self._recv())
            if answer is not None:
                self.write(answer)
        self.login_user = user
        self.server_params = machine.params
        self.pid, self.backend_secret = machine.key
        self.max_connections = int(await self._show("max_connections") or 0)
        self.reader = None
        if init_query:
            await self.run_silently(init_query, timeout=30.0)
        self._set_state(_IDLE)

    async def _show(self, name: str) -> str:
        """A server setting read during startup (one round trip; '' if it fails)."""
        self.write(m.query(f"SHOW {name}"))
        value = ""
        while True:
            msg = await self._recv()
            if msg[0:1] == b"D" and len(msg) > 11:
                value = msg[11:].decode(errors="replace")  # one column: int16 count, int32 len
            elif msg[0:1] == b"Z":
                return value


async def open_server(
    pool_name: str,
    host: str,
    port: int,
    *,
    user: str,
    password: str,
    database: str,
    init_query: str,
    tls: ssl.SSLContext | None,
    tls_mode: str,
    tls_server_name: str,
    connect_timeout: float,
    max_size: int,
    source_address: str = "",
) -> ServerConn:
    """Open, secure and authenticate a backend connection (from `source_address` if given)."""
    conn = ServerConn(pool_name, max_size)
    try:
        async with asyncio.timeout(connect_timeout):
            await connect(lambda: conn, host, port, source_address=source_address)
            conn.peer = f"{host}:{port}"
            if tls is not None:
                await conn.start_tls(tls, tls_server_name or host, tls_mode != "prefer")
            await conn.login(user, password, database, init_query)
    except TimeoutError:
        conn.close("connect timeout")
        raise ServerError(f"timed out connecting to the database at {host}:{port}") from None
    except BaseException:
        conn.close("failed during connect")
        raise
    return conn
