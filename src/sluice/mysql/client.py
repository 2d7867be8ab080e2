"""One client connected to a MySQL proxy listener.

States (one owner, `FrontendSession._set_state` in `sluice.session.frontend`):

    STARTUP -> READY <-> WAITING      (any) -> CLOSED

STARTUP is a coroutine (`sluice.mysql.login`): Sluice's own greeting, the
optional TLS upgrade, the client's handshake response and the authentication.
READY relays commands: each starts with sequence id 0; a client with no
connection that sends one borrows a connection (WAITING if it must wait).
Transaction boundaries come from the server's status flags, not from SQL: when
a command's reply is complete and the server says no transaction is open, the
connection goes back to the pool, unless the client is pinned, or holds a
savepoint that the flags do not show (`savepoint`).

The client's session is what Sluice tracks of it, whichever connection it holds:
its settings and schema (replayed on the next connection), its statements, its
LAST_INSERT_ID() (learned on the connection before it goes back, when the
client's statements made an insert id, and replayed on the next), its status
flags (every OK or EOF Sluice makes itself carries them: `status_flags`).
What its earlier statements left (ROW_COUNT(), warnings, ...) is readable only
on a connection that holds the client's own (`sluice.mysql.results`); elsewhere
the read is refused with a clear error rather than answered with another
client's results. A lending that ran something opaque taints the
connection: it is reset before another client borrows it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from sluice.errors import ProtocolError, QueryCanceled, ServerError, SluiceError
from sluice.mysql.answers import last_insert_id_query, one_value_result
from sluice.mysql.errors import MyError, err_packet, error_for_sqlstate
from sluice.mysql.login import NO_PACKETS, LoginHost, change_user_to, login
from sluice.mysql.pool import SessionState
from sluice.mysql.prepared import StatementRelay
from sluice.mysql.results import ALL, SELECT_WITHOUT_TABLE, ClientResults, head_of, query_writes
from sluice.mysql.server import ReplyRelay
from sluice.mysql.statements import ClientStatements
from sluice.net.clock import now as clock_now
from sluice.session.empty import SharedEmptyDict, SharedEmptyList
from sluice.session.frontend import FrontendSession, Refusal, SessionHost
from sluice.session.services import Services
from sluice.session.states import ClientState
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.compress import CompressedStream
from sluice.wire.mysql.messages import OkPacket, build_err, build_ok, ok_insert_id
from sluice.wire.mysql.packets import PacketReader, frame
from sluice.wire.mysql.sql import NO_EFFECT, Effect, classify_bytes

if TYPE_CHECKING:
    from sluice.mysql.pool import MyPool  # noqa: F401 (named as a string in a base class)
    from sluice.mysql.server import MyServerConn
    from sluice.session.views import Session

log: Final = logging.getLogger("sluice.client")
# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CLOSED: Final = ClientState.CLOSED
_READY: Final = ClientState.READY
_STARTUP: Final = ClientState.STARTUP
_WAITING: Final = ClientState.WAITING

_BUFFER_WHILE_WAITING: Final = 256 * 1024
# Shared by every client until it has variables, or a statement setting some, of its own:
# only `_reply_done` and `_take` write them, each to a container of the client's own first
# (an idle client costs less).
_NO_SETTINGS: Final[dict[str, str]] = SharedEmptyDict()
_NO_SETS: Final[list[tuple[str, str]]] = SharedEmptyList()
# Before login: the largest packet (a HandshakeResponse41 with connect attributes,
# or an IAM auth token as the password: a few KB), and what is read ahead of the
# login's next step.
LOGIN_PACKET_MAX: Final = 16 * 1024
_BUFFER_WHILE_LOGGING_IN: Final = 2 * LOGIN_PACKET_MAX
# Module constants are `Final`: the compiled build reads them as C globals, not from the
# module's dict.
_OWN: Final = rp.OWN
_INFILE: Final = rp.INFILE
_OK: Final = rp.OK
_DONE: Final = rp.DONE
_ERROR: Final = rp.ERROR
_WALKED: Final = rp.NONE
_CONDITIONS: Final = rp.OK | rp.RESULT_END | rp.ERROR  # packets that say if a statement raised any
_SESSION: Final = c.SESSION_STATUS
_REPORTED: Final = c.SESSION_STATUS | c.TRANSACTION_STATUS
_LEARN_INSERT_ID: Final = cmd.query("SELECT LAST_INSERT_ID()")
_ENDS_SAVEPOINTS: Final = re.compile(
    rb"commit|begin|start\s+transaction|rollback\b(?!\s+(?:work\s+)?to\b)"
)
_KILL: Final = re.compile(rb"\s*kill\s+(?:(query|connection)\s+)?(\d+)\s*;?\s*$", re.IGNORECASE)
_PINS: Final = {c.COM_SET_OPTION: "COM_SET_OPTION"}
_UNKNOWN_COMMAND: Final = frame(build_err(c.ER_UNKNOWN_COM_ERROR, "Unknown command"), 1)
_SECONDS: Final = re.compile(r"=\s*'?(\d+)'?\s*$")
_SEMICOLON: Final = ord(";")  # (an int: see sluice.wire.mysql.sql)


def names_statement(command: int) -> bool:
    """Whether `command` acts on a prepared statement it names by id: COM_STMT_EXECUTE,
    _SEND_LONG_DATA, _CLOSE, _RESET or _FETCH (0x17 to 0x1C, all but COM_SET_OPTION)."""
    return c.COM_STMT_EXECUTE <= command <= c.COM_STMT_FETCH and command != c.COM_SET_OPTION


def wait_seconds(stmt: str) -> float:
    """The seconds a tracked `SET SESSION wait_timeout = ...` sets; 0 when not a plain
    number (DEFAULT: the server's, which the proxy's own idle_client_timeout stands for)."""
    found = _SECONDS.search(stmt)
    return float(found.group(1)) if found else 0.0


class KillPeers(Protocol):
    """The sibling workers, asked to KILL a session one of them holds (`workers.peers.Peers`)."""

    async def kill(self, ident: int, user: str, *, query: bool, by: str) -> bool: ...


class MyServices(Services, Protocol):
    """The program's services a MySQL session uses, with the sibling workers."""

    @property
    def peers(self) -> KillPeers | None: ...


class MyHost(SessionHost, LoginHost, Protocol):
    """What a MySQL client session needs of its proxy (`MyProxy`)."""

    @property
    def app(self) -> MyServices: ...

    def log_command(self, client: Session, payload: bytes) -> None: ...


class MyClientSession(
    FrontendSession[MyHost, "MyPool", "MyServerConn", tuple[int, bytes]],
    ReplyRelay,
    SessionState,
):
    """A MySQL client connection: login coroutine, then an event-driven relay.

    (`database` is the schema the client last selected.)"""

    _NORMAL_ENDS: ClassVar[frozenset[str]] = frozenset({"client sent COM_QUIT"})

    __slots__ = (
        "_ids_seen",
        "_infile",
        "_learning",
        "_login_accept",
        "_login_seq",
        "_resetting",
        "_zip",
        "capabilities",
        "charset",
        "last_insert_id",
        "pending",
        "pending_schema",
        "program_name",
        "reader",
        "relay",
        "results",
        "role_changed",
        "savepoint",
        "settings",
        "statements",
        "status",
        "taint",
    )

    def __init__(self, proxy: MyHost) -> None:
        super().__init__(proxy)
        self.reader = PacketReader(min(LOGIN_PACKET_MAX, proxy.app.settings.max_packet_size))
        self.capabilities = 0
        self.charset = c.UTF8MB4_GENERAL_CI
        self.program_name = ""  # from the client's connect attributes
        self.settings = _NO_SETTINGS  # its tracked variables (its own once it has any)
        self.pending = _NO_SETS  # variables set by the statements running
        self.pending_schema: str | None = None
        self._login_seq = 2  # the sequence id of the proxy's next login packet
        self._infile = False
        self._login_accept = NO_PACKETS  # the packets that end a successful login
        self.statements = ClientStatements()
        self._resetting = False  # the client's COM_RESET_CONNECTION is in flight
        # The session as the client's own statements left it, whichever connection it holds:
        self.status = c.SERVER_STATUS_AUTOCOMMIT  # its status flags while it holds none
        self.last_insert_id = 0  # its LAST_INSERT_ID() (exact while it holds no connection)
        self.role_changed = False  # it ran something that may change the current role
        self.taint = ""  # this lending ran something opaque (see sql.Effect.taint)
        self.savepoint = False  # it made one with autocommit off, no transaction flagged
        self._ids_seen = False  # an OK of this lending carried an insert id
        self._learning = False  # our SELECT LAST_INSERT_ID() runs before the release
        self.results = ClientResults(self)  # where its earlier statements' results are
        self.relay = StatementRelay(self)  # (holds the statements and results above)
        self._zip: CompressedStream | None = None  # CLIENT_COMPRESS, from the login's end

    # ---- what the proxy asks of a session ----

    @property
    def application_name(self) -> str:
        return self.program_name

    # ---- the socket's protocol callbacks ----

    def data_received(self, data: bytes) -> None:
        if self._zip is not None:
            data = self._unzip(data)
            if not data:
                return
        self.reader.feed(data)
        state = self.state
        if state is _READY:
            self.last_active = clock_now()
            self._drain()
        elif state is _WAITING:
            if self.reader.pending > _BUFFER_WHILE_WAITING:
                self.pause_reading()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        elif self.reader.pending > _BUFFER_WHILE_LOGGING_IN:
            self.pause_reading()  # the login reads nothing now: resumed when it does

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self._zip is not None:
            data = self._zip.wrap(data)
        self.transport.write(data)

    def start_compression(self) -> None:
        """The login's final OK went out: from now on both ways are compressed packets."""
        if self._zip is None:
            self._zip = CompressedStream()

    def _unzip(self, data: bytes) -> bytes:
        assert self._zip is not None
        try:
            return self._zip.unwrap(data)
        except ProtocolError as exc:
            self.fail(exc)
            return b""

    # ---- login ----

    def _login(self, refused: Refusal | None) -> Coroutine[Any, Any, None]:
        return login(self)  # (a refused client is answered at once: never lingers)

    def _refuse(self, exc: SluiceError) -> None:
        self.fail(exc, seq=0)  # an ERR instead of the greeting, as the server sends

    def _login_failed(self, exc: SluiceError) -> None:
        self.fail(exc, seq=self._login_seq)

    def _reader_limit(self, size: int) -> None:
        self.reader.max_size = size

    async def receive(self, expect: int) -> tuple[int, bytes]:
        """The client's next login packet, which must carry sequence id `expect`."""
        while (packet := self.reader.next()) is None:
            if self.state is _CLOSED:
                raise ServerError("client closed the connection")
            self.resume_reading()  # if the read-ahead had filled up
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        self._login_seq = (expect + 1) & 0xFF
        if packet[0] != expect:
            raise MyError(c.ER_NET_PACKETS_OUT_OF_ORDER, "Got packets out of order")
        return packet

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        """TLS from here on, starting with any bytes already read (the ClientHello)."""
        assert self.transport is not None
        await self.transport.start_tls(ctx, server_side=True, early=self.reader.take_rest())
        self.tls = True

    # ---- relay: client to server ----

    def _drain(self) -> None:
        if self.relay.held is not None:  # a command waits for its statement's PREPARE
            return
        try:
            while self.state is _READY:
                packet = self._held or self.reader.next()
                self._held = None
                if packet is None:
                    return
                if not self._command(packet):
                    return
        except SluiceError as exc:
            self.fail(exc)
        except Exception:  # our bug: this client gets an error, the proxy stays up
            log.exception("internal error relaying a command of client %s", self.peer)
            self.fail(SluiceError("internal error in the proxy"))

    def _command(self, packet: tuple[int, bytes]) -> bool:
        """Handle one client packet; False to stop draining (waiting, or closed)."""
        seq, payload = packet
        server = self.server
        if self._infile and server is not None:  # LOAD DATA LOCAL: file contents
            server.write(frame(payload, seq))
            self._infile = bool(payload)
            return True
        if not payload:  # MariaDB reads it as COM_SLEEP, which no client may send
            self.answered_locally(_UNKNOWN_COMMAND)
            return True
        command = payload[0]
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
        if command == c.COM_PROCESS_KILL:  # (never relayed: a short one would make the
            # server read a thread id from beyond the packet)
            self._kill(int.from_bytes(payload[1:5], "little"), query=False)
            return True
        if rp.not_relayed(command):  # replication: not through a pooling proxy
            self.answered_locally(_UNKNOWN_COMMAND)
            return True
        if command == c.COM_RESET_CONNECTION:
            return self._reset_connection(server, payload)
        if command == c.COM_CHANGE_USER:
            self._change_user(payload)
            return False
        if command == c.COM_QUERY and server is None:
            name = last_insert_id_query(payload[1:])
            if name is not None:  # the session's value is known exactly: no need to borrow
                status = self.status_flags()
                value = one_value_result(name, self.last_insert_id, self.capabilities, status)
                self.answered_locally(value)
                return True
        on_statement = names_statement(command)
        if on_statement:
            refused = self.relay.refusal(command, payload)
            if refused is not None:  # an unknown statement, a malformed command
                if refused:
                    self.answered_locally(refused)
                return True
            if command == c.COM_STMT_CLOSE and server is None:
                self.statements.by_id.pop(cmd.stmt_id(payload), None)  # no reply; nothing to send
                return True
        if server is None:
            if command == c.COM_PING:  # not a statement, the server keeps the
                self.results.pinged()  # previous one's warnings, but not its ROW_COUNT()
                self.write(self._local_ok())
                return True
            server = self._borrow(packet)
            if server is None:
                return False
        self.stats.queries += 1
        if self.switches.debug_logging:
            self.proxy.log_command(self, payload)
        if command == c.COM_STMT_PREPARE:
            self.relay.prepare(server, payload)
            return True
        if on_statement:
            return self.relay.command(server, command, payload)
        if self._note(server, command, payload):
            writes = 0
            if command == c.COM_QUERY:
                head = head_of(payload[1:])
                if self.savepoint or head.startswith(b"savepoint") or _SEMICOLON in payload:
                    self._note_savepoint(head, payload)
                writes = query_writes(head)
            self.results.sent(server, writes)
            server.send_command(payload)
            if not self._sent_at:
                self._sent_at = clock_now()
        return True

    def send(self, server: MyServerConn, payload: bytes, writes: int = 0) -> None:
        """Send one of the client's commands (`writes`: see results.query_writes)."""
        self.results.sent(server, writes)
        server.send_command(payload)

    def drain(self) -> None:
        """Go on with the client's commands (after a held one went out)."""
        self._drain()

    def answered_locally(self, packets: bytes) -> None:
        """Write an answer Sluice made; no connection ran this command for the client."""
        self.results.answered(error=packets[4] == 0xFF)
        self.write(packets)

    def status_flags(self) -> int:
        """The status flags of the client's session now: in every OK or EOF Sluice makes."""
        server: MyServerConn | None = self.server
        if server is None:
            return self.status
        return server.tracker.status & _REPORTED

    def _local_ok(self) -> bytes:
        return frame(build_ok(OkPacket(status=self.status_flags())), 1)

    def release_if_idle(self, server: MyServerConn) -> None:
        """Give the connection back if the client's last command left it free."""
        if (
            server.tracker.idle
            and self.server is server
            and not self.pinned
            and not self._learning  # our own commands first
            and self.relay.held is None
            and not self.switches.session_mode
            and not (self.savepoint and self._keeps_savepoint(server))
        ):
            self._release()

    def _reset_connection(self, server: MyServerConn | None, payload: bytes) -> bool:
        """COM_RESET_CONNECTION: a connection the client holds (a transaction, a pin) is
        really reset; otherwise the client's session lives only in Sluice: reset here."""
        if server is None:
            self.forget_session()
            self.answered_locally(self._local_ok())
            return True
        self._resetting = True
        self.send(server, payload)
        assert self.pool is not None
        self.pool.after_reset(server)  # the init query again; the statements are gone
        return True

    def _after_reset(self, server: MyServerConn, error: bool) -> None:
        """The server answered the client's COM_RESET_CONNECTION."""
        if error:
            server.dirty = True  # what it still holds is unknown
            return
        self.forget_session()
        if self.pinned and not self.role_changed:  # MariaDB keeps the role: keep the pin
            assert self.pool is not None
            self.pool.pinned -= 1
            self.pinned = ""

    def forget_session(self) -> None:
        """The session starts afresh (a reset, another user): nothing tracked is left."""
        self.settings.clear()
        self.wait_timeout = 0.0
        self.statements.clear()
        self.pending.clear()
        self.pending_schema = None
        self.last_insert_id = 0
        self._ids_seen = self._learning = False
        self.results.answered()  # nothing of the old session is the client's now
        self.savepoint = False
        self.status = self.pool.default_status if self.pool is not None else self.status

    def _change_user(self, payload: bytes) -> None:
        """Log in again as another user: leave the connection and the pool behind."""
        server, self.server = self.server, None
        if server is not None and self.pool is not None:
            self._leave(server)
            self.pool.client_left(self, server)  # reset, or closed if mid-transaction
        elif self.pinned and self.pool is not None:
            self.pool.pinned -= 1
        self._set_state(_STARTUP)
        steps = self._run_login(lambda: change_user_to(self, payload))
        self._handshake = asyncio.get_running_loop().create_task(steps)

    def _kill(self, thread_id: int, *, query: bool) -> None:
        """KILL [QUERY] of a connection id Sluice issued: only the user's own sessions."""
        app = self.proxy.app
        if app.peers is not None and app.slot.owner(thread_id) != app.slot.index:
            app.spawn(self._kill_elsewhere(thread_id, query=query))  # a sibling worker's id
            return
        found = kill_session(app, thread_id, self.user, query=query, by=self.peer)
        self._killed(thread_id, found)

    async def _kill_elsewhere(self, thread_id: int, *, query: bool) -> None:
        assert self.proxy.app.peers is not None
        found = await self.proxy.app.peers.kill(thread_id, self.user, query=query, by=self.peer)
        if self.state is not _CLOSED:
            self._killed(thread_id, found)

    def _killed(self, thread_id: int, found: bool) -> None:
        if found:
            self.answered_locally(self._local_ok())
        else:
            unknown = build_err(c.ER_NO_SUCH_THREAD, f"Unknown thread id: {thread_id}")
            self.answered_locally(frame(unknown, 1))

    def _note(self, server: MyServerConn, command: int, payload: bytes) -> bool:
        """Pins, taints and tracked settings of a command about to be sent; False if
        Sluice answered it instead (a read of results `server` does not hold)."""
        if command == c.COM_QUERY:
            effect = classify_bytes(payload[1:])
            if effect is NO_EFFECT:
                return True
            if effect.reads and not self.results.readable(server, effect.read_kinds):
                if not self.pinned:
                    self.pin(effect.pin)  # its next reads will find their statement here
                self.results.refuse(server, effect.reads)
                return False
            self._take(effect)
        elif command == c.COM_INIT_DB:
            self.pending_schema = payload[1:].decode(errors="replace")
        elif command in _PINS and not self.pinned:
            self.pin(_PINS[command])
        return True

    def _note_savepoint(self, head: bytes, payload: bytes) -> None:
        """With autocommit off, MariaDB keeps a SAVEPOINT made before any statement
        started a transaction (the status flags still say none is open) until COMMIT,
        ROLLBACK or the next BEGIN: the client keeps the connection until then, or
        until autocommit is on again (`_keeps_savepoint`)."""
        if self.savepoint:
            self.savepoint = _ENDS_SAVEPOINTS.match(head) is None
        else:
            self.savepoint = head.startswith(b"savepoint") or b"savepoint" in payload.lower()

    def _keeps_savepoint(self, server: MyServerConn) -> bool:
        """Whether the client's savepoint keeps the connection (autocommit back on
        committed it away)."""
        if server.tracker.status & c.SERVER_STATUS_AUTOCOMMIT:
            self.savepoint = False
        return self.savepoint

    def _take(self, effect: Effect) -> None:
        if effect.pin and not self.pinned:
            self.pin(effect.pin)
        if effect.taint:
            self.taint = effect.taint
        self.role_changed = self.role_changed or effect.role
        if effect.sets:
            self.note_sets(effect.sets)
        if effect.schema is not None:
            self.pending_schema = effect.schema

    def note_sets(self, sets: tuple[tuple[str, str], ...]) -> None:
        """Variables the statement being sent sets: kept if it succeeds (`_reply_done`)."""
        if self.pending is _NO_SETS:
            self.pending = []
        self.pending.extend(sets)

    def _borrow(self, packet: tuple[int, bytes]) -> MyServerConn | None:
        if self.switches.stopping:
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
        """Forward the server's reply bytes as they came; return the connection when free."""
        tracker = server.tracker
        replies = server.replies
        relay = self.relay
        results = self.results
        whole = self._zip is not None
        try:
            while (flags := replies.next(relay.capture is not None, whole)) != _WALKED:
                payload = replies.payload
                if flags & _OWN:
                    replies.drop()
                    out = replies.take()
                    if out:  # what the handler may write to the client comes after
                        self.write(out)
                    server.own_packet(payload, flags)
                    continue
                if relay.capture is not None:
                    changed = relay.captured(server, payload, flags)
                    if changed is not payload:
                        replies.replace(changed)
                if flags & _INFILE:
                    self._infile = True
                if flags & _OK and not self._ids_seen and ok_insert_id(payload):
                    self._ids_seen = True  # LAST_INSERT_ID() may have changed: learn it
                if flags & _CONDITIONS:
                    results.packet(tracker, payload, flags)
                if flags & _DONE:
                    self._reply_done(server, bool(flags & _ERROR))
        except SluiceError as exc:
            server.close(f"protocol error from the server: {exc}")
            return
        out = replies.take()
        if out:
            self.write(out)
        if self._sent_at and not tracker.pending:
            self.stats.query_latency.observe(clock_now() - self._sent_at)
            self._sent_at = 0.0
        if (  # release_if_idle, inline on the hot path
            tracker.idle
            and self.server is server
            and not self.pinned
            and not self._learning
            and self.relay.held is None
            and not self.switches.session_mode
            and not (self.savepoint and self._keeps_savepoint(server))
        ):
            self._release()

    def _reply_done(self, server: MyServerConn, error: bool) -> None:
        self.results.done(server, error)
        if self._resetting:
            self._resetting = False
            self._after_reset(server, error)
        if error and (self.pending or self.pending_schema is not None):
            server.dirty = True  # what the server applied before the error is unknown
        elif not error:
            if self.pending and self.settings is _NO_SETTINGS:
                self.settings = {}
            for name, stmt in self.pending:  # a re-set variable moves last: replay order
                if name == "wait_timeout":
                    self.wait_timeout = wait_seconds(stmt)
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
        if self._ids_seen:  # the session's LAST_INSERT_ID() first; the client need not wait
            self._learn_insert_id(server)
            return
        self.server = None
        self.status = server.tracker.status & _SESSION
        if self.wait_timeout:  # idle from now on, as the server would count it
            self.last_active = clock_now()
        if self.taint:
            self._leave(server)
        self.resume_reading()  # in case the server's full buffer had paused us
        server.detach()
        self.pool.on_release(self, server)

    def _leave(self, server: MyServerConn) -> None:
        """What `server` must know when the client lets go of it."""
        if self.savepoint:  # the session holds a savepoint of ours: reset before others
            server.dirty, self.savepoint = True, False
        if self.taint:
            server.tainted_by, self.taint = self, ""
        if self._ids_seen or self._learning:
            server.last_insert_id = None  # unknown: the next borrower's value is replayed

    def _learn_insert_id(self, server: MyServerConn) -> None:
        """SELECT LAST_INSERT_ID() on the connection before it goes back: an OK's insert id
        is not always the session's (an INSERT with an explicit id reports that id)."""
        self._ids_seen, self._learning = False, True
        row = rp.FirstRow()

        def learned(payload: bytes, flags: int) -> None:
            row.feed(payload, flags)
            if not row.done or self.server is not server:  # the client left: never mind
                return
            self._learning = False
            value = (row.values or [None])[0]
            if value is not None and value.isdigit() and not flags & rp.ERROR:
                self.last_insert_id = server.last_insert_id = int(value)
            elif not self.pinned:  # (killed?) the value is only in this session: keep it
                self.pin("LAST_INSERT_ID() not learned")

        touches = SELECT_WITHOUT_TABLE if server.mariadb else ALL  # MySQL: clears warnings
        server.send_command(_LEARN_INSERT_ID, own=True, on_reply=learned, touches=touches)

    def _report_lost(self, server: MyServerConn) -> None:
        self.fail(ServerError("lost connection to the database during the query"))

    async def cancel_running(self) -> None:
        """KILL QUERY for this client: stop what its connection runs, or its wait."""
        server = self.server
        if server is not None:
            assert self.pool is not None
            await self.pool.kill_query(server.thread_id)
        elif self.state is _WAITING:
            self.fail(QueryCanceled("Query execution was interrupted"), fatal=False)

    # ---- ending ----

    def _send_error(self, exc: SluiceError, fatal: bool, seq: int) -> None:
        """`exc` as a MySQL ERR packet; fatal errors end the session."""
        self.write(frame(err_packet(exc, self.user, self.peer, self.tls), seq))
        self.results.raised = True

    def fail_with(self, text: str, sqlstate: str) -> None:
        self.fail(error_for_sqlstate(text, sqlstate))


def kill_session(app: Services, thread_id: int, user: str, *, query: bool, by: str) -> bool:
    """KILL [QUERY] `thread_id` for `user` (from `by`) in this worker: False unless it holds
    a session of that user with that id."""
    target = app.cancel_target(thread_id)
    if not isinstance(target, MyClientSession) or target.user != user:
        return False
    if query:
        app.spawn(target.cancel_running())
    else:  # as the server ends a killed connection: no word, the client reads 2013
        target._close_now(f"killed by KILL CONNECTION from {by}")
    return True
