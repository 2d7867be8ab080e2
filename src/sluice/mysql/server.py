"""One connection from the proxy to a MySQL or MariaDB server.

States (one owner, `MyServerConn._set_state`):

    CONNECTING -> IDLE <-> ACTIVE -> CLOSED

CONNECTING covers TCP, the server's greeting, the optional TLS upgrade and the
login (`LoginClient` decides every answer). IDLE connections sit in their pool;
ACTIVE ones are lent to a client session, which receives every reply packet
the `ReplyTracker` does not mark as the proxy's own. Every close states its
reason in the log.

Replies to the proxy's own commands go to the handler given with each command
(`send_command(..., on_reply=)`), in order, whoever holds the connection when
they arrive: an own command may still run when its client has moved on. The
connection also remembers what a pooled session needs to know of it: whose
results of earlier statements it holds, and which (`results_of`, `holds`: see
`sluice.mysql.results`), its LAST_INSERT_ID() when known, and the statement that
gives back the role it had at login (MariaDB keeps a role across
COM_RESET_CONNECTION).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from typing import ClassVar, Final, Protocol, TypeAlias, cast

from mypy_extensions import trait

from sluice.errors import ServerError, SluiceError
from sluice.mysql.statements import ServerStatements
from sluice.net.endpoints import connect
from sluice.session.backend import BackendConn, BackendState
from sluice.session.views import ClientView
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.handshake import parse_handshake
from sluice.wire.mysql.login import LoginClient
from sluice.wire.mysql.packets import PacketReader, frame
from sluice.wire.mysql.sql import DIAGNOSTICS, FOUND_ROWS, LAST_GTID, ROW_COUNT

# What gets the packets of an own command's reply (with their ReplyTracker flags).
OwnHandler: TypeAlias = Callable[[bytes, int], None]

ALL_RESULTS: Final = ROW_COUNT | FOUND_ROWS | DIAGNOSTICS | LAST_GTID  # (results.ALL)

log: Final = logging.getLogger("sluice.server")
# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CLOSED: Final = BackendState.CLOSED
_CONNECTING: Final = BackendState.CONNECTING
_IDLE: Final = BackendState.IDLE


@trait
class ReplyRelay:
    """The call a lent connection makes on its client for the server's replies. A mypyc
    trait, which the client session derives from: compiled, a call through a table (a
    call through a Protocol is a method lookup by name)."""

    __slots__ = ()  # (interpreted, a base without slots gives every session a __dict__)

    @abstractmethod
    def relay_replies(self, server: MyServerConn) -> None: ...


class Borrower(ClientView, Protocol):
    """The client session a connection is lent to (`MyClientSession`)."""

    def relay_replies(self, server: MyServerConn) -> None: ...

    def server_lost(self, server: MyServerConn) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class MyServerConn(BackendConn[Borrower, rp.ReplyTracker]):
    """A MySQL backend connection: login as a coroutine, then a relay of reply packets."""

    goodbye: ClassVar[bytes] = frame(bytes((c.COM_QUIT,)), 0)

    __slots__ = (
        "_own",
        "dirty",
        "holds",
        "last_insert_id",
        "mariadb",
        "max_connections",
        "reader",
        "replies",
        "results_of",
        "role_reset",
        "schema",
        "server_version",
        "settings",
        "statements",
        "tainted_by",
        "thread_id",
        "tls",
    )

    def __init__(self, pool_name: str, max_size: int) -> None:
        super().__init__(pool_name)
        self.reader = PacketReader(max_size)  # until logged in
        self.tracker = rp.ReplyTracker(0)
        self.replies = rp.ReplyStream(self.tracker, max_size)  # from then on
        self.statements = ServerStatements()
        self.settings: dict[str, str] = {}  # tracked variables as this connection has them
        self.schema = ""
        self.dirty = False  # settings unknown: reset before lending
        self.tainted_by: object | None = None  # the session that ran opaque SQL: reset first
        self.results_of: object | None = None  # the session whose statements' results it holds
        self.holds = 0  # which of them (sluice.mysql.results)
        self.last_insert_id: int | None = 0  # the session's LAST_INSERT_ID(); None: unknown
        self.role_reset = b""  # the own command that restores the login role
        self._own: deque[OwnHandler | None] = deque()
        self.thread_id = 0
        self.max_connections = 0
        self.server_version = ""
        self.mariadb = False
        self.tls = False

    @property
    def backend_pid(self) -> int:
        return self.thread_id

    @property
    def prepared_count(self) -> int:
        return len(self.statements.by_key)

    @property
    def broken(self) -> bool:
        # BackendConn's, where the tracker's type is known: compiled, its `idle` is a direct
        # call, not a lookup by name (the pool asks on every borrow and release)
        return self.state is _CLOSED or not self.tracker.idle

    # ---- the socket's protocol callbacks ----

    def data_received(self, data: bytes) -> None:
        if self.state is _CONNECTING:
            self.reader.feed(data)
            self._wake()
            return
        self.replies.feed(data)
        client = self.client
        if client is not None:
            cast(ReplyRelay, client).relay_replies(self)  # (every borrower is one)
        else:
            self._unsolicited()

    def _unsolicited(self) -> None:
        """Replies to our own commands on an idle connection, or a server going away."""
        replies = self.replies
        try:
            while replies.buffered:
                if not self.tracker.pending:
                    self.close("server sent data while idle (likely terminating)")
                    return
                flags = replies.next(every=True)
                if flags == rp.NONE:
                    break
                if flags & rp.OWN:
                    self.own_packet(replies.payload, flags)
        except SluiceError as exc:
            self.close(f"protocol error from the server: {exc}")
            return
        replies.take()  # (the rest of a reply whose client left: no one's)
        if not self.tracker.pending:
            self._wake()

    def send_command(
        self,
        payload: bytes,
        *,
        own: bool = False,
        on_reply: OwnHandler | None = None,
        touches: int = ALL_RESULTS,
    ) -> None:
        """Send one command (sequence id 0) and note it in the tracker; the packets of
        the reply to an own command go to `on_reply` (None: swallowed). An own command
        drops the results it `touches` of whoever's statements ran before it."""
        if self.tracker.expect(payload[0], own=own) and own:
            self._own.append(on_reply)
        if own:
            self.holds &= ~touches
        self.write(frame(payload, 0))

    def own_packet(self, payload: bytes, flags: int) -> None:
        """A packet of the reply to the oldest own command still outstanding."""
        handler = self._own[0]
        if handler is not None:
            handler(payload, flags)
        if flags & rp.DONE:
            self._own.popleft()

    # ---- waiting (login, liveness checks, resets) ----

    async def _wait(self) -> None:
        if self.state is _CLOSED:
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
        await self.settle(timeout)
        if self.tracker.errors != errors:
            raise ServerError(f"command 0x{payload[0]:02x} failed on the server")

    async def settle(self, timeout: float) -> None:
        """Wait until every command sent has its answer (on an idle connection)."""
        async with asyncio.timeout(timeout):
            while self.tracker.pending:
                await self._wait()

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
        self.mariadb = "mariadb" in hs.server_version.lower()
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
        await self._session_facts()
        self._set_state(_IDLE)
        if init:
            await self.run_own(cmd.query(init), timeout=30.0)
            self.last_insert_id = None  # whatever the init query did

    async def _session_facts(self) -> None:
        """The server's max_connections (for pools sized as a percent of it; 0 if
        unknown) and the role this login starts with (what a reset must restore)."""
        mariadb = self.mariadb
        row = rp.FirstRow()
        self.send_command(
            cmd.query("SELECT @@max_connections" + (", CURRENT_ROLE()" if mariadb else "")),
            own=True,
            on_reply=row.feed,
        )
        while not row.done:
            _, payload = await self.receive()
            flags = self.tracker.feed(payload)
            if flags & rp.OWN:
                self.own_packet(payload, flags)
        self.replies = rp.ReplyStream(self.tracker, self.reader.max_size)
        self.replies.feed(self.reader.take_rest())
        values = row.values or [None]
        limit = values[0] or b""
        self.max_connections = int(limit) if limit.isdigit() else 0
        login_role = values[1] if mariadb and len(values) > 1 else None
        self.role_reset = role_reset(self.server_version, login_role)

    async def _upgrade(self, ctx: ssl.SSLContext, server_name: str) -> None:
        assert self.transport is not None
        await self.transport.start_tls(ctx, server_side=False, server_hostname=server_name)
        self.tls = True


def role_reset(version: str, login_role: bytes | None) -> bytes:
    """The command that gives a session back the role it logged in with."""
    if "mariadb" in version.lower():
        if login_role is None:
            return cmd.query("SET ROLE NONE")
        return cmd.query(b"SET ROLE `" + login_role.replace(b"`", b"``") + b"`")
    major = version.split(".", 1)[0]
    return cmd.query("SET ROLE DEFAULT") if major.isdigit() and int(major) >= 8 else b""


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
    source_address: str = "",
) -> MyServerConn:
    """Open, secure and authenticate a backend connection (from `source_address` if given)."""
    conn = MyServerConn(pool_name, max_size)
    try:
        async with asyncio.timeout(connect_timeout):
            await connect(lambda: conn, host, port, source_address=source_address)
            conn.peer = f"{host}:{port}"
            await conn.login(make_login, tls, tls_required, tls_server_name or host, init_query)
    except TimeoutError:
        conn.close("connect timeout")
        raise ServerError(f"timed out connecting to the database at {host}:{port}") from None
    except BaseException:
        conn.close("failed during connect")
        raise
    return conn
