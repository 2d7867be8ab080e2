"""One client connected to a MySQL proxy listener.

States (one owner, `MyClientSession._set_state`):

    STARTUP -> READY <-> WAITING      (any) -> CLOSED

STARTUP is a coroutine (`sluice.mysql.login`): Sluice's own greeting, the
optional TLS upgrade, the client's handshake response and the authentication.
READY relays commands: each starts with sequence id 0; a client with no
connection that sends one borrows a connection (WAITING if it must wait).
Transaction boundaries come from the server's status flags, not from SQL: when
a command's reply is complete and the server says no transaction is open, the
connection goes back to the pool, unless the client is pinned.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from typing import TYPE_CHECKING, cast

from sluice.errors import QueryCanceled, ServerError, SluiceError
from sluice.mysql.answers import last_insert_id_query, one_value_result
from sluice.mysql.errors import MyError, err_packet
from sluice.mysql.statements import (
    ClientStatements,
    ClientStmt,
    ServerStmt,
    execute_for_server,
    reply_for_client,
)
from sluice.pool.pool import PoolStats
from sluice.session.frontend import ClientState, FrontendSession, is_variable_set
from sluice.tls import TLSBuffer
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.messages import OkPacket, build_err, build_ok, parse_ok
from sluice.wire.mysql.packets import PacketReader, frame
from sluice.wire.mysql.sql import NO_EFFECT, classify_bytes

if TYPE_CHECKING:
    from sluice.mysql.pool import MyPool
    from sluice.mysql.proxy import MyProxy
    from sluice.mysql.server import MyServerConn

log = logging.getLogger("sluice.client")

_BUFFER_WHILE_WAITING = 256 * 1024
_LOCAL = frozenset((c.COM_PING,))
_STMT_COMMANDS = frozenset(
    (c.COM_STMT_EXECUTE, c.COM_STMT_SEND_LONG_DATA, c.COM_STMT_RESET, c.COM_STMT_FETCH)
)
_UNKNOWN_STMT = (1243, "HY000")  # ER_UNKNOWN_STMT_HANDLER
_CONNECTION_KILLED = (1927, "70100")  # ER_CONNECTION_KILLED
_KILL = re.compile(rb"\s*kill\s+(?:(query|connection)\s+)?(\d+)\s*;?\s*$", re.IGNORECASE)
_PINS = {c.COM_SET_OPTION: "COM_SET_OPTION"}


class MyClientSession(FrontendSession):
    """A MySQL client connection: login coroutine, then an event-driven relay."""

    server: MyServerConn | None

    def __init__(self, proxy: MyProxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.reader = PacketReader(proxy.app.settings.max_packet_size)
        self.pool: MyPool | None = None
        self.user = ""
        self.database = ""  # the schema the client last selected
        self.peer = ""
        self.tls = False
        self.capabilities = 0
        self.charset = c.UTF8MB4_GENERAL_CI
        self.pinned = ""
        self.program_name = ""  # from the client's connect attributes
        self.settings: dict[str, str] = {}
        self.pending: list[tuple[str, str]] = []
        self.pending_schema: str | None = None
        self.cancel_key = (0, 0)
        self.connected_at = time.monotonic()
        self.last_active = self.connected_at
        self.stats: PoolStats = proxy.startup_stats
        self.close_reason = ""
        self._waiter: asyncio.Future[None] | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._infile = False
        self._login_accept: list[bytes] = []  # the packets that end a successful login
        self.statements = ClientStatements()
        self._capture: list[bytes] | None = None  # a STMT_PREPARE reply being relayed
        self._capture_sql = b""
        self._held_stmt: tuple[bytes, ClientStmt] | None = None  # waits for our own PREPARE
        self._own_capture: list[bytes] | None = None
        self._own_skip = 0  # our own commands still to answer before the held PREPARE
        self._unpin_on_ok = False  # a pinned client's COM_RESET_CONNECTION is in flight
        self._sent_at = 0.0
        self.last_insert_id = 0  # from the OK packets this client got
        self._tls_buf: TLSBuffer | None = None  # TLS done here, not by the event loop

    # ---- what the proxy asks of a session ----

    @property
    def logging_in(self) -> bool:
        return self.state is ClientState.STARTUP

    @property
    def application_name(self) -> str:
        return self.program_name

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=256 * 1024)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")
        self.proxy.client_connected(self)
        self._handshake = asyncio.get_running_loop().create_task(self._run_login())

    def data_received(self, data: bytes) -> None:
        if self._tls_buf is not None:
            data = self._decrypt(data)
            if not data:
                return
        self.reader.feed(data)
        state = self.state
        if state is ClientState.READY:
            self.last_active = time.monotonic()
            self._drain()
        elif state is ClientState.WAITING:
            if self.reader.pending > _BUFFER_WHILE_WAITING:
                self.pause_reading()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not ClientState.CLOSED:
            self._close_now("client disconnected")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self._tls_buf is not None:
            data = self._tls_buf.encrypt(data)
        self.transport.write(data)

    def _decrypt(self, data: bytes) -> bytes:
        tls = self._tls_buf
        assert tls is not None and self.transport is not None
        try:
            plain = tls.feed(data)
        except ssl.SSLError as exc:
            self._close_now(f"TLS error: {exc.reason or exc}")
            return b""
        handshake = tls.outgoing_bytes()
        if handshake:
            self.transport.write(handshake)
        if not plain and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # the login waits on the TLS handshake
        return plain

    # ---- login ----

    async def _run_login(self, change_user: bytes = b"") -> None:
        from sluice.mysql.login import change_user_to, login

        try:
            await (change_user_to(self, change_user) if change_user else login(self))
        except SluiceError as exc:
            self.fail(exc, seq=self._login_seq)
            return
        except (ConnectionError, OSError) as exc:
            self._close_now(f"connection error during login: {exc}")
            return
        except Exception:  # our bug: this client gets an error, the proxy stays up
            log.exception("internal error during the login of client %s", self.peer)
            self.fail(SluiceError("internal error in the proxy during login"), seq=self._login_seq)
            return
        finally:
            self._handshake = None
            self._waiter = None
        if self.state is ClientState.STARTUP:
            self._set_state(ClientState.READY)
            self._drain()

    _login_seq = 2

    async def receive(self) -> tuple[int, bytes]:
        while (packet := self.reader.next()) is None:
            if self.state is ClientState.CLOSED:
                raise ServerError("client closed the connection")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        self._login_seq = (packet[0] + 1) & 0xFF
        return packet

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        """TLS from here on, starting with any bytes already read (the ClientHello)."""
        self._tls_buf = tls = TLSBuffer(ctx)
        early = self.reader.take_rest()
        plain = self._decrypt(early) if early else b""
        while not tls.done:
            if self.state is ClientState.CLOSED:
                raise ServerError("client closed the connection during the TLS handshake")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        self.tls = True
        if plain:
            self.reader.feed(plain)

    # ---- relay: client to server ----

    def _drain(self) -> None:
        try:
            while self.state is ClientState.READY and self._held_stmt is None:
                packet = self._held or self.reader.next()
                self._held = None
                if packet is None:
                    return
                if not self._command(packet):
                    return
        except SluiceError as exc:
            self.fail(exc)

    def _command(self, packet: tuple[int, bytes]) -> bool:
        """Handle one client packet; False to stop draining (waiting, or closed)."""
        seq, payload = packet
        server = self.server
        if self._infile and server is not None:  # LOAD DATA LOCAL: file contents
            server.write(frame(payload, seq))
            self._infile = bool(payload)
            return True
        command = payload[0] if payload else -1
        if command == c.COM_QUIT:
            self._close_now("client sent COM_QUIT")
            return False
        if command == c.COM_QUERY and payload[1:40].lstrip()[:4].upper() == b"KILL":
            match = _KILL.match(payload, 1)
            if match is not None:
                self._kill(
                    int(match.group(2)),
                    query=bool(match.group(1)) and match.group(1).lower() == b"query",
                )
                return True
        if command == c.COM_PROCESS_KILL and len(payload) >= 5:
            self._kill(int.from_bytes(payload[1:5], "little"), query=False)
            return True
        if command in rp.NOT_RELAYED:  # replication: not through a pooling proxy
            self.write(frame(build_err(c.ER_UNKNOWN_COM_ERROR, "Unknown command"), 1))
            return True
        if command == c.COM_RESET_CONNECTION:
            return self._reset_connection(server, payload)
        if command == c.COM_CHANGE_USER:
            self._change_user(payload)
            return False
        if command == c.COM_QUERY and server is None:
            name = last_insert_id_query(payload[1:])
            if name is not None:  # the INSERT's connection may be anyone's by now
                self.write(one_value_result(name, self.last_insert_id, self.capabilities))
                return True
        if command == c.COM_STMT_CLOSE and server is None:
            self.statements.by_id.pop(cmd.stmt_id(payload), None)  # no reply; nothing to send
            return True
        if server is None:
            if command in _LOCAL or command < 0:
                return self._answer_locally(command)
            server = self._borrow(packet)
            if server is None:
                return False
        self.stats.queries += 1
        if self.proxy.debug_logging:
            self.proxy.log_command(self, payload)
        if command == c.COM_STMT_PREPARE:
            return self._prepare(server, payload)
        if command in _STMT_COMMANDS or command == c.COM_STMT_CLOSE:
            return self._statement_command(server, command, payload)
        self._note(command, payload)
        server.send_command(payload)
        if not self._sent_at:
            self._sent_at = time.monotonic()
        return True

    # ---- binary-protocol statements ----

    def _prepare(self, server: MyServerConn, payload: bytes) -> bool:
        sql = payload[1:]
        effect = classify_bytes(sql)
        if effect.pin and not self.pinned:
            self.pin(effect.pin)  # it takes effect when executed: keep the connection
        cached = server.statements.get(sql)
        if cached is None:
            self._capture, self._capture_sql = [], sql
            server.send_command(payload)
            return True
        ok = cmd.parse_prepare_ok(cached.reply[0])
        client_id = self.statements.add(sql, ok.num_params, ok.num_columns)
        reply = reply_for_client(cached.reply, client_id)
        self.write(b"".join(frame(p, seq) for seq, p in enumerate(reply, 1)))
        self._release_if_idle(server)
        return True

    def _statement_command(self, server: MyServerConn, command: int, payload: bytes) -> bool:
        stmt = self.statements.by_id.get(cmd.stmt_id(payload))
        if command == c.COM_STMT_CLOSE:
            if stmt is not None:
                del self.statements.by_id[cmd.stmt_id(payload)]
            self._release_if_idle(server)  # the statement stays prepared for others
            return True
        if stmt is None:
            raise MyError(_UNKNOWN_STMT, "Unknown prepared statement handler given to the proxy")
        if command == c.COM_STMT_EXECUTE and payload[5:6] not in (b"", b"\x00") and not self.pinned:
            self.pin("server-side cursor")
        known = server.statements.get(stmt.sql)
        if known is None:  # prepare it on this connection first; the command waits
            self._own_skip = server.tracker.pending
            server.send_command(cmd.stmt_prepare(stmt.sql), own=True)
            self._held_stmt, self._own_capture = (payload, stmt), []
            return False
        self._send_statement(server, payload, stmt, known)
        return True

    def _send_statement(
        self, server: MyServerConn, payload: bytes, stmt: ClientStmt, known: ServerStmt
    ) -> None:
        if payload[0] == c.COM_STMT_EXECUTE:
            server.send_command(execute_for_server(payload, stmt, known))
        else:
            server.send_command(cmd.with_stmt_id(payload, known.stmt_id))

    def _own_reply(self, server: MyServerConn, payload: bytes, flags: int) -> None:
        """A packet answering one of our own commands; the last is the held PREPARE."""
        capture = self._own_capture
        if capture is None or self._held_stmt is None:
            return
        if self._own_skip:  # an earlier command of ours (a settings sync)
            self._own_skip -= bool(flags & rp.DONE)
            return
        capture.append(payload)
        if not flags & rp.DONE:
            return
        held, self._held_stmt, self._own_capture = self._held_stmt, None, None
        if flags & rp.ERROR:
            self.write(frame(payload, 1))  # it cannot be prepared here: the client's answer
        else:
            payload_, stmt = held
            self._send_statement(server, payload_, stmt, self._remember(server, stmt.sql, capture))
        asyncio.get_running_loop().call_soon(self._drain)

    def _remember(self, server: MyServerConn, sql: bytes, reply: list[bytes]) -> ServerStmt:
        known = ServerStmt(cmd.stmt_id(reply[0]), reply)
        limit = self.proxy.config.pool.max_prepared_statements
        for old in server.statements.add(sql, known, limit):
            server.send_command(cmd.stmt_close(old), own=True)
        return known

    def _release_if_idle(self, server: MyServerConn) -> None:
        keeps = self.pinned or self.proxy.config.pool.mode == "session"
        if server.tracker.idle and self.server is server and not keeps:
            self._release()

    def _reset_connection(self, server: MyServerConn | None, payload: bytes) -> bool:
        """COM_RESET_CONNECTION: a pinned client's connection really resets (and unpins);
        anyone else's session state lives only in Sluice, so it is cleared here."""
        self.settings.clear()
        self.statements.clear()
        if server is not None and self.pinned:
            self._unpin_on_ok = True
            server.send_command(payload)
            return True
        self.write(frame(build_ok(OkPacket(status=c.SERVER_STATUS_AUTOCOMMIT)), 1))
        if server is not None:
            self._release_if_idle(server)
        return True

    def _change_user(self, payload: bytes) -> None:
        """Log in again as another user: leave the connection and the pool behind."""
        server, self.server = self.server, None
        if server is not None and self.pool is not None:
            self.pool.client_left(self, server)  # reset, or closed if mid-transaction
        elif self.pinned and self.pool is not None:
            self.pool.pinned -= 1
        self._set_state(ClientState.STARTUP)
        self._handshake = asyncio.get_running_loop().create_task(self._run_login(payload))

    def _kill(self, thread_id: int, *, query: bool) -> None:
        """KILL [QUERY] of a connection id Sluice issued: only the user's own sessions."""
        target = self.proxy.app.cancel_target(thread_id)
        if not isinstance(target, MyClientSession) or target.user != self.user:
            self.write(frame(build_err(c.ER_NO_SUCH_THREAD, f"Unknown thread id: {thread_id}"), 1))
            return
        self.write(frame(build_ok(OkPacket(status=c.SERVER_STATUS_AUTOCOMMIT)), 1))
        if query:
            self.proxy.app.spawn(target.cancel_running())
        else:
            target.fail(MyError(_CONNECTION_KILLED, "Connection was killed"))

    def _answer_locally(self, command: int) -> bool:
        if command == c.COM_PING:
            self.write(frame(build_ok(OkPacket(status=c.SERVER_STATUS_AUTOCOMMIT)), 1))
            return True
        raise ServerError("empty command packet")

    def _note(self, command: int, payload: bytes) -> None:
        """Pins and tracked settings of a command about to be sent."""
        if command == c.COM_QUERY:
            effect = classify_bytes(payload[1:])
            if effect is NO_EFFECT:
                return
            if effect.pin and not self.pinned:
                self.pin(effect.pin)
            self.pending.extend(effect.sets)
            if effect.schema is not None:
                self.pending_schema = effect.schema
        elif command == c.COM_INIT_DB:
            self.pending_schema = payload[1:].decode(errors="replace")
        elif command in _PINS and not self.pinned:
            self.pin(_PINS[command])

    def pin(self, reason: str) -> None:
        if self.proxy.config.pool.exclude_variable_sets and is_variable_set(reason):
            return  # the operator chose to share such state rather than pin for it
        self.pinned = reason
        assert self.pool is not None
        self.pool.on_pin(self, reason)

    def _borrow(self, packet: tuple[int, bytes]) -> MyServerConn | None:
        if self.proxy.app.stopping:
            self.fail_with("the proxy is shutting down", "57P01")
            return None
        assert self.pool is not None
        server: MyServerConn | None = self._acquire_or_wait(packet)
        if server is None:
            return None
        self._attach(server)
        return server

    def _on_borrowed(self, server: MyServerConn) -> None:
        self._attach(server)

    def _attach(self, server: MyServerConn) -> None:
        server.attach(self)
        self.server = server
        assert self.pool is not None
        self.pool.sync(self, server)
        self.pool.on_attach(self)

    # ---- relay: server to client ----

    def relay_replies(self, server: MyServerConn) -> None:
        """Forward the server's reply packets; return the connection when it is free."""
        out: list[bytes] = []
        tracker = server.tracker
        reader = server.reader
        try:
            while (packet := reader.next()) is not None:
                seq, payload = packet
                flags = tracker.feed(payload)
                if flags & rp.OWN:
                    self._own_reply(server, payload, flags)
                    continue
                if self._capture is not None:
                    payload = self._captured(server, payload, flags)
                out.append(frame(payload, seq))
                if flags & rp.INFILE:
                    self._infile = True
                if flags & rp.DONE:
                    if payload[:1] == b"\x00":
                        self._note_ok(payload)
                    self._reply_done(server, bool(flags & rp.ERROR))
        except SluiceError as exc:
            server.close(f"protocol error from the server: {exc}")
            return
        if out:
            self.write(b"".join(out))
        if self._sent_at and not tracker.pending:
            self.stats.query_latency.observe(time.monotonic() - self._sent_at)
            self._sent_at = 0.0
        keeps = self.pinned or self.proxy.config.pool.mode == "session"
        if tracker.idle and self.server is server and not keeps:
            self._release()

    def _captured(self, server: MyServerConn, payload: bytes, flags: int) -> bytes:
        """A packet of the reply to a client's PREPARE: cache it, give the client its id."""
        capture = self._capture
        assert capture is not None
        if flags & rp.ERROR:
            self._capture = None
            return payload
        capture.append(payload)
        if flags & rp.PREPARED:
            ok = cmd.parse_prepare_ok(payload)
            client_id = self.statements.add(self._capture_sql, ok.num_params, ok.num_columns)
            payload = cmd.with_stmt_id(payload, client_id)
        if flags & rp.DONE:
            self._capture = None
            self._remember(server, self._capture_sql, capture)
        return payload

    def _note_ok(self, payload: bytes) -> None:
        """Remember an INSERT's generated id (a 0 means: this statement made none)."""
        insert_id = parse_ok(payload).last_insert_id
        if insert_id:
            self.last_insert_id = insert_id

    def _reply_done(self, server: MyServerConn, error: bool) -> None:
        if self._unpin_on_ok:
            self._unpin_on_ok = False
            if not error:
                server.settings, server.dirty = {}, False
                server.statements.clear()
                assert self.pool is not None
                self.pool.pinned -= 1
                self.pinned = ""
        if error and (self.pending or self.pending_schema is not None):
            server.dirty = True  # what the server applied before the error is unknown
        elif not error:
            for name, stmt in self.pending:  # a re-set variable moves last: replay order
                self.settings.pop(name, None)
                self.settings[name] = stmt
                server.settings.pop(name, None)
                server.settings[name] = stmt
            if self.pending_schema is not None:
                self.database = server.schema = self.pending_schema
        self.pending.clear()
        self.pending_schema = None

    def _release(self) -> None:
        server = self.server
        assert server is not None and self.pool is not None
        self.server = None
        self.resume_reading()  # in case the server's full buffer had paused us
        server.detach()
        self.pool.on_release(self, server)

    def server_lost(self, server: MyServerConn) -> None:
        self.server = None
        assert self.pool is not None
        self.pool.pool.forget(server)
        self.fail(ServerError("lost connection to the database during the query"))

    async def cancel_running(self) -> None:
        """KILL QUERY for this client: stop what its connection runs, or its wait."""
        server = self.server
        if server is not None:
            assert self.pool is not None
            await self.pool.kill_query(server.thread_id)
        elif self.state is ClientState.WAITING:
            self.fail(QueryCanceled("Query execution was interrupted"), fatal=False)

    # ---- ending ----

    def fail(self, exc: SluiceError, fatal: bool = True, seq: int = 1) -> None:
        """Report `exc` as a MySQL ERR packet; fatal errors end the session."""
        if self.state is ClientState.CLOSED:
            return
        if self.transport is not None and not self.transport.is_closing():
            self.write(frame(err_packet(exc, self.user, self.peer, self.tls), seq))
        if fatal:
            self._close_now(f"{type(exc).__name__}: {exc}")
        elif self.state is ClientState.WAITING:
            if self._request is not None:
                self._request.cancel()
                self._request = None
            self._held = None
            self._set_state(ClientState.READY)
            self.resume_reading()
            self._drain()

    def fail_with(self, text: str, sqlstate: str) -> None:
        from sluice.mysql.errors import error_for_sqlstate

        self.fail(error_for_sqlstate(text, sqlstate))

    def _close_now(self, reason: str) -> None:
        if self.state is ClientState.CLOSED:
            return
        self.close_reason = reason
        self._set_state(ClientState.CLOSED)
        level = logging.DEBUG if reason == "client sent COM_QUIT" else logging.INFO
        log.log(level, "client %s user=%s closed: %s", self.peer, self.user, reason)
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        if self._request is not None:
            self._request.cancel()
        server, self.server = self.server, None
        if server is not None and self.pool is not None:
            self.pool.client_left(self, server)
        self.proxy.client_disconnected(self)
        if self.transport is not None:
            self.transport.close()
