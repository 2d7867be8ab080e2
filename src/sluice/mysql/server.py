"""One connection from the proxy to a MySQL or MariaDB server.

States (one owner, `MyServerConn._set_state`):

    CONNECTING -> IDLE <-> ACTIVE -> CLOSED

CONNECTING covers TCP, the server's greeting, the optional TLS upgrade and the
login (`LoginClient` decides every answer). IDLE connections sit in their pool;
ACTIVE ones are lent to a client session, which receives every reply packet
the `ReplyTracker` does not mark as the proxy's own. Every close states its
reason in the log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from sluice.errors import ServerError
from sluice.mysql.statements import ServerStatements
from sluice.session.backend import BackendConn, BackendState
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.handshake import parse_handshake
from sluice.wire.mysql.login import LoginClient
from sluice.wire.mysql.packets import PacketReader, frame, read_lenenc_str

if TYPE_CHECKING:
    from sluice.mysql.client import MyClientSession

log = logging.getLogger("sluice.server")


class MyServerConn(BackendConn):
    """A MySQL backend connection: login as a coroutine, then a relay of reply packets."""

    goodbye = frame(bytes((c.COM_QUIT,)), 0)
    client: MyClientSession | None

    def __init__(self, pool_name: str, max_size: int) -> None:
        super().__init__(pool_name)
        self.reader = PacketReader(max_size)
        self.tracker = rp.ReplyTracker(0)
        self.statements = ServerStatements()
        self.settings: dict[str, str] = {}  # tracked variables as this connection has them
        self.schema = ""
        self.dirty = False  # settings unknown: reset before lending
        self.thread_id = 0
        self.max_connections = 0
        self.server_version = ""
        self.tls = False

    @property
    def backend_pid(self) -> int:
        return self.thread_id

    @property
    def prepared_count(self) -> int:
        return len(self.statements.by_sql)

    # ---- asyncio.Protocol ----

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        client = self.client
        if self.state is BackendState.CONNECTING:
            self._wake()
        elif client is not None:
            client.relay_replies(self)
        else:
            self._unsolicited()

    def _unsolicited(self) -> None:
        """Replies to our own commands on an idle connection, or a server going away."""
        while (packet := self.reader.next()) is not None:
            if not self.tracker.pending:
                self.close("server sent data while idle (likely terminating)")
                return
            self.tracker.feed(packet[1])
        if not self.tracker.pending:
            self._wake()

    def send_command(self, payload: bytes, *, own: bool = False) -> None:
        """Send one command (sequence id 0) and note it in the tracker."""
        self.tracker.expect(payload[0], own=own)
        self.write(frame(payload, 0))

    # ---- waiting (login, liveness checks, resets) ----

    async def _wait(self) -> None:
        if self.state is BackendState.CLOSED:
            raise ServerError("server closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    async def receive(self) -> tuple[int, bytes]:
        while (packet := self.reader.next()) is None:
            await self._wait()
        return packet

    async def run_own(self, payload: bytes, timeout: float) -> None:
        """Run a command of the proxy's own on an idle connection, swallowing its reply."""
        errors = self.tracker.errors
        self.send_command(payload, own=True)
        async with asyncio.timeout(timeout):
            while self.tracker.pending:
                await self._wait()
        if self.tracker.errors != errors:
            raise ServerError(f"command 0x{payload[0]:02x} failed on the server")

    async def check(self) -> bool:
        """COM_PING; True if the server answered in time."""
        try:
            await self.run_own(bytes((c.COM_PING,)), timeout=5.0)
        except (ServerError, TimeoutError):
            return False
        return True

    # ---- login ----

    async def login(
        self,
        make_login: Callable[[bool], LoginClient],
        tls: ssl.SSLContext | None,
        tls_required: bool,
        server_name: str,
        init: str,
    ) -> None:
        _, greeting = await self.receive()
        offers_tls = greeting[:1] != b"\xff" and bool(
            parse_handshake(greeting).capabilities & c.CLIENT_SSL
        )
        if tls is not None and not offers_tls:
            if tls_required:
                raise ServerError("the database server does not accept TLS connections")
            tls = None
        login = make_login(tls is not None)
        hs = login.greet(greeting)
        self.thread_id, self.server_version = hs.connection_id, hs.server_version
        seq = 1
        if tls is not None:
            self.write(frame(login.ssl_request(), seq))
            seq += 1
            await self._upgrade(tls, server_name)
        self.write(frame(login.response(), seq))
        while not login.finished:
            seq, payload = await self.receive()
            answer = login.feed(payload)
            if answer is not None:
                self.write(frame(answer, seq + 1))
        assert login.ok is not None
        self.tracker = rp.ReplyTracker(login.capabilities, status=login.ok.status)
        self.max_connections = await self._max_connections()
        self._set_state(BackendState.IDLE)
        if init:
            await self.run_own(cmd.query(init), timeout=30.0)

    async def _max_connections(self) -> int:
        """The server's max_connections (for pools sized as a percent of it); 0 if unknown."""
        self.send_command(cmd.query("SELECT @@max_connections"))
        value, row_next = 0, False
        while self.tracker.pending:
            _, payload = await self.receive()
            flags = self.tracker.feed(payload)
            if row_next and not flags & (rp.RESULT_END | rp.ERROR | rp.DEFS_EOF):
                text, _ = read_lenenc_str(payload, 0)
                value, row_next = (int(text) if text.isdigit() else 0), False
            elif flags & (rp.DEFS_EOF | rp.DEFS_END):
                row_next = True  # the row follows the definitions (and their EOF)
        return value

    async def _upgrade(self, ctx: ssl.SSLContext, server_name: str) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(self.transport, self, ctx, server_hostname=server_name)
        self.transport = cast(asyncio.Transport, new)
        self.tls = True


async def open_server(
    pool_name: str,
    host: str,
    port: int,
    make_login: Callable[[bool], LoginClient],
    *,
    tls: ssl.SSLContext | None,
    tls_required: bool,
    tls_server_name: str,
    init_query: str,
    connect_timeout: float,
    max_size: int,
) -> MyServerConn:
    """Open, secure and authenticate a backend connection."""
    loop = asyncio.get_running_loop()
    conn = MyServerConn(pool_name, max_size)
    try:
        async with asyncio.timeout(connect_timeout):
            await loop.create_connection(lambda: conn, host, port)
            conn.peer = f"{host}:{port}"
            await conn.login(make_login, tls, tls_required, tls_server_name or host, init_query)
    except TimeoutError:
        conn.close("connect timeout")
        raise ServerError(f"timed out connecting to the database at {host}:{port}") from None
    except BaseException:
        conn.close("failed during connect")
        raise
    return conn
