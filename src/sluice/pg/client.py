"""One client connected to a PostgreSQL proxy listener.

States (one owner, `FrontendSession._set_state` in `sluice.session.frontend`):

    STARTUP -> READY <-> WAITING      (any) -> CLOSED
             READY <-> CHECKING
             READY <-> DESCRIBING

STARTUP is a coroutine: SSLRequest and TLS, the startup packet, authentication,
and the greeting (ParameterStatus, proxy-issued BackendKeyData, ReadyForQuery).
READY relays: every complete client message goes through `_forward`, which
keeps the outstanding-request queue of the borrowed connection in step and
rewrites prepared-statement names. A client with no connection that sends a
message borrows one (WAITING if it must wait); in transaction mode the
connection goes back to the pool when the server reports it idle, unless the
client is pinned. If the borrow ran opaque SQL (`sluice.pg.guard`), the
connection is first asked what session state is left (CHECKING: the client's
next messages wait for the answer), and the client is pinned if it still needs
some of it. A Bind or Describe of a statement the client prepared on another
connection may have to wait until this one has described it (DESCRIBING: the
message and those after it wait; `sluice.pg.statements`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from sluice.errors import (
    AuthFailed,
    ClientError,
    ProtocolError,
    QueryCanceled,
    ServerError,
    SluiceError,
)
from sluice.net.clock import now as clock_now
from sluice.pg.guard import NO_GUARD, RECHECK, TEMP_SCHEMA, BorrowGuard
from sluice.pg.handshake import LoginHost, LoginServices, handshake
from sluice.pg.server import ReplySink
from sluice.pg.settings import UNTOUCHED, SessionSettings, replay_queries
from sluice.pg.statements import ClientStatements
from sluice.session.frontend import FrontendSession, Refusal, SessionHost
from sluice.session.states import ClientState
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.framing import MessageReader
from sluice.wire.pg.sql import (
    NO_EFFECT,
    Change,
    ChangeKind,
    Effect,
    classify_bytes,
    savepoint_changes,
    split_statements,
)

if TYPE_CHECKING:
    from sluice.pg.pgpool import PgPool  # noqa: F401 (named as a string in a base class)
    from sluice.pg.server import ServerConn
    from sluice.pg.statements import StatementNames
    from sluice.session.views import Session

log: Final = logging.getLogger("sluice.client")
# Bound to a Final name: compiled, a C static; imported, a dict lookup at every call.
monotonic: Final = time.monotonic
# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CHECKING: Final = ClientState.CHECKING
_CLOSED: Final = ClientState.CLOSED
_DESCRIBING: Final = ClientState.DESCRIBING
_READY: Final = ClientState.READY
_WAITING: Final = ClientState.WAITING

# Module constants are `Final`: the compiled build reads them as C globals, not from the
# module's dict.
_Q: Final = ord("Q")
_P: Final = ord("P")
_B: Final = ord("B")
_D: Final = ord("D")
_E: Final = ord("E")
_C: Final = ord("C")
_S: Final = ord("S")
_H: Final = ord("H")
_X: Final = ord("X")
_F: Final = ord("F")
_COPY: Final = frozenset(b"dcf")
_ATTACHED: Final = object()
_CONSUMED: Final = object()
_WAIT: Final = object()
_MAY_DEALLOCATE: Final = frozenset((b"d", b"D"))  # how a Query that may be a DEALLOCATE starts
# A DEALLOCATE the proxy cannot answer: the server sees it and the client keeps it.
_DEALLOCATE_ONE: Final = Effect(pin="DEALLOCATE")
_DEALLOCATE_ALL: Final = Effect(pin="DEALLOCATE", drops_statements=True)
_FUNCTION_CALL: Final = Effect(opaque=True, writes=True)
_BUFFER_WHILE_WAITING: Final = 256 * 1024  # bytes read ahead while waiting for a connection
# Before login: the largest message (PostgreSQL's own bound on an authentication
# message is 65535; a SCRAM message is under 1 KB and the longest password, an
# IAM auth token, a few KB), and what is read ahead of the login's next step.
LOGIN_MESSAGE_MAX: Final = 16 * 1024
_BUFFER_WHILE_LOGGING_IN: Final = 2 * LOGIN_MESSAGE_MAX
_serials: Final = itertools.count(1)
_STATUS_FAILED: Final = ord("E")  # ReadyForQuery's transaction status: failed
_STATUS_IN_BLOCK: Final = ord("T")  # and in a transaction block
_TAKE_SNAPSHOT: Final = m.query("SELECT")  # no rows to speak of, but a snapshot, as any query takes


def _drops_statements(sql: bytes, tracker: r.ResponseTracker) -> bool:
    """Whether SQL holding DISCARD ALL or DEALLOCATE ALL will drop the session's prepared
    statements. Not when the server surely refuses it: discarded behind an error until
    the Sync, in a failed transaction, or DISCARD ALL inside a transaction block (a query
    of several statements is one too). With replies still due the status it will meet is
    unknown: they count as dropped."""
    if tracker.awaiting_sync:
        return False
    statements = split_statements(sql.decode("latin-1"))
    deallocates = any(stmt[:10].lower() == "deallocate" for stmt in statements)
    if len(statements) > 1:
        return deallocates  # (it may run before a later statement fails)
    if tracker.outstanding or tracker.unsynced:
        return True
    status = tracker.status
    return status != _STATUS_FAILED and (deallocates or status != _STATUS_IN_BLOCK)


class PgServices(LoginServices, Protocol):
    """The program's services a PostgreSQL proxy uses, with those of its own."""

    @property
    def statement_names(self) -> StatementNames:
        """The server-side names of prepared statements, shared by every pool."""


class PgHost(SessionHost, LoginHost, Protocol):
    """What a PostgreSQL client session (and its startup) needs of its proxy (`PgProxy`)."""

    @property
    def app(self) -> PgServices: ...

    def log_message(self, client: Session, msg: bytes) -> None: ...

    def release_database(self, database: str) -> None: ...

    async def send_cancel(
        self, pid: int, secret: int, wanted: Callable[[], bool] | None = None
    ) -> None: ...


class ClientSession(FrontendSession[PgHost, "PgPool", "ServerConn", bytes], ReplySink):
    """A client connection: handshake coroutine, then an event-driven relay.

    (`wait_timeout` stays 0: the server has no idle limit that a pooled client escapes.)"""

    _STEP: ClassVar[str] = "startup"
    _NORMAL_ENDS: ClassVar[frozenset[str]] = frozenset(
        {"client sent Terminate", "cancel request handled"}
    )

    __slots__ = ("_skip_to_sync", "guard", "reader", "settings", "statements")

    def __init__(self, proxy: PgHost) -> None:
        super().__init__(proxy)
        self.reader = MessageReader(min(LOGIN_MESSAGE_MAX, proxy.app.settings.max_packet_size))
        self.settings = UNTOUCHED  # shared until the client has settings (`own_settings`)
        self.guard = NO_GUARD  # shared until the client's SQL gives it something to note
        pool = proxy.config.pool
        # a session-mode client keeps its connection: its statement names pass through
        # unchanged, as directly (SQL EXECUTE can name them)
        max_prepared = 0 if pool.mode == "session" else pool.max_prepared_statements
        # shared until its first named Parse (`own_statements`)
        self.statements = proxy.app.statement_names.none_prepared(max_prepared)
        self._skip_to_sync = False

    @property
    def application_name(self) -> str:
        return self.settings.shown("application_name")

    def own_settings(self) -> SessionSettings:
        """The client's own settings, made at its first change (a SET, a restore, what the
        state check adopts): until then it shares those of the clients that logged in with
        the same startup settings (`UNTOUCHED` if none), which nothing writes to."""
        settings = self.settings
        if settings.shared:
            settings = self.settings = settings.copy()
        return settings

    def own_statements(self) -> ClientStatements:
        """The client's own statements, made at its first named Parse: until then it
        shares the empty ones of every client that has prepared none."""
        statements = self.statements
        if statements.guard is NO_GUARD:
            guard = self.own_guard()
            statements = ClientStatements(statements.names, statements.max_prepared, guard)
            self.statements = statements
        return statements

    def own_guard(self) -> BorrowGuard:
        """The client's own guard, made when its SQL first gives it something to note:
        until then it shares `NO_GUARD`, on which nothing is noted."""
        guard = self.guard
        if guard is NO_GUARD:
            guard = self.guard = BorrowGuard(next(_serials))
        return guard

    # ---- the socket's protocol callbacks ----

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        state = self.state
        if state is _READY:
            self.last_active = clock_now()
            self._drain()
        elif state is _WAITING or state is _CHECKING or state is _DESCRIBING:
            if self.reader.pending > _BUFFER_WHILE_WAITING:
                self.pause_reading()  # resumed once a connection is borrowed or checked
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        elif self.reader.pending > _BUFFER_WHILE_LOGGING_IN:
            self.pause_reading()  # the login reads nothing now: resumed when it does

    def eof_received(self) -> bool | None:
        return None

    def transport_write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    # ---- handshake ----

    def _linger(self, refused: Refusal) -> bool:
        """A refused client is told why after its startup packet, so that libpq shows it."""
        return self.proxy.admission.linger(refused)

    def _login(self, refused: Refusal | None) -> Coroutine[Any, Any, None]:
        return handshake(self, refused)

    def _reader_limit(self, size: int) -> None:
        self.reader.max_size = size

    async def recv_startup(self) -> bytes:
        while True:
            packet = self.reader.next_startup()
            if packet is not None:
                return packet
            await self._wait_data()

    async def recv(self) -> bytes:
        while True:
            msg = self.reader.next()
            if msg is not None:
                return msg
            await self._wait_data()

    async def _wait_data(self) -> None:
        if self.state is _CLOSED:
            raise ClientError("client closed the connection")
        self.resume_reading()  # if the read-ahead had filled up
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        if self.closed:
            raise ClientError("client closed the connection")

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        assert self.transport is not None
        await self.transport.start_tls(ctx, server_side=True)
        self.tls = True

    def fail_with(self, text: str, sqlstate: str) -> None:
        """End the session with a FATAL error of our own (timeouts, shutdown)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(m.error_response(sqlstate, text, "FATAL"))
        self._close_now(text)

    # ---- relay: client to server ----

    def _drain(self) -> None:
        """Forward every complete message; borrow a connection when one is needed."""
        out: list[bytes] = []
        try:
            while self.state is _READY:
                msg = self._held
                if msg is None:
                    msg = self.reader.next()
                else:
                    self._held = None
                if msg is None:
                    break
                if self._skip_to_sync:
                    self._skip(msg)
                    continue
                if self.server is None:
                    verdict = self._borrow(msg, out)
                    if verdict is _CONSUMED:
                        continue
                    if verdict is _WAIT:
                        break
                self._forward(msg, out)
        except SluiceError as exc:
            self.fail(exc)
            return
        except Exception:  # our bug: this client gets an error, the proxy stays up
            log.exception("internal error relaying a message of client %s", self.peer)
            self.fail(SluiceError("internal error in the proxy"))
            return
        if out and self.server is not None:
            self.server.write(b"".join(out))
            if not self._sent_at:
                self._sent_at = clock_now()

    def _skip(self, msg: bytes) -> None:
        """After an error of our own in an extended-protocol request: drop up to Sync."""
        if msg[0] == _S:
            self._skip_to_sync = False
            self.transport_write(m.READY_IDLE)
        elif msg[0] == _X:
            self._close_now("client sent Terminate")

    def _borrow(self, msg: bytes, out: list[bytes]) -> object:
        """Attach a connection now, consume the message without one, or start waiting."""
        kind = msg[0]
        if kind == _X:
            self._close_now("client sent Terminate")
            return _CONSUMED
        if kind == _S or kind == _H:
            if kind == _S:
                self.transport_write(m.READY_IDLE)  # nothing outstanding: no connection needed
            return _CONSUMED
        if kind == _Q and msg[5:6] in _MAY_DEALLOCATE and self._answered(msg, None):
            return _CONSUMED
        if self.switches.stopping:
            self.fail_with("the proxy is shutting down", "57P01")
            return _CONSUMED
        assert self.pool is not None
        server = self._acquire_or_wait(msg)
        if server is None:
            return _WAIT
        self._attach(server, out)
        return _ATTACHED

    async def borrow_for_session(self) -> ServerConn:
        """Session mode: the connection the client keeps, borrowed at login (so that the
        greeting names its backend pid, as the server's own greeting would)."""
        assert self.pool is not None
        pool = self.pool.pool
        started = monotonic()
        server: ServerConn | None = pool.try_acquire()
        if server is None:
            request = pool.request()
            try:
                server = await request
            except asyncio.CancelledError:  # the client left
                if request.done() and not request.cancelled() and request.exception() is None:
                    pool.release(request.result())  # handed over just as it left
                raise
        self.stats.borrow_latency.observe(monotonic() - started)
        return server

    def attach_session(self, server: ServerConn) -> None:
        """Attach the connection `borrow_for_session` gave (nothing awaited in between)."""
        if self.closed:
            assert self.pool is not None
            self.pool.pool.release(server)
            return
        self._on_borrowed(server)

    def _on_borrowed(self, server: ServerConn) -> None:
        out: list[bytes] = []
        self._attach(server, out)
        if out:
            server.write(b"".join(out))

    def _attach(self, server: ServerConn, out: list[bytes]) -> None:
        server.attach(self)
        self.server = server
        assert self.pool is not None
        if server.leftover:  # what a borrower may have left that no check can list
            forget = self.guard.on_attach(server)
            if forget:
                out.append(forget)
        settings = self.settings
        params = settings.params  # (the connection's own map: the same values, no compare)
        if server.params_dirty or (params is not server.params and params != server.params):
            out.append(self._sync_settings(server))
        elif params is not server.params and settings.shared:
            server.params, server.params_shared = params, True  # from now on, no compare
        self.pool.on_attach(self)

    def _forward(self, msg: bytes, out: list[bytes]) -> None:
        server = self.server
        assert server is not None
        tracker = server.tracker
        kind = msg[0]
        if self.switches.debug_logging:
            self.proxy.log_message(self, msg)
        if kind == _Q:
            # (after an error the server discards it unread until the Sync: nothing to note)
            restore = False if tracker.awaiting_sync else self._note_sql(msg[5:-1], tracker, msg)
            if restore is None:
                return  # answered by the proxy
            if restore:
                self._send_restoring(r.QUERY_RESTORING, msg, out)
            else:
                tracker.push(r.QUERY)
                out.append(msg)
            self.stats.queries += 1
        elif kind == _P:
            self.statements.parse(msg, server, out, self)
        elif kind == _B:
            if not self.statements.bind(msg, server, out, self):
                self._hold_until_described(msg, tracker)
        elif kind == _E:
            tracker.push(r.EXECUTE)
            out.append(msg)
            self.stats.queries += 1
        elif kind == _S:
            if self.settings.resets_noted:
                self._send_restoring(r.SYNC_RESTORING, msg, out)
            else:
                tracker.push(r.SYNC)
                out.append(msg)
        elif kind == _D:
            if not self.statements.describe(msg, server, out):
                self._hold_until_described(msg, tracker)
        elif kind == _C:
            self.statements.close(msg, server, out, self)
        elif kind == _H or kind in _COPY:
            out.append(msg)
        elif kind == _F:
            self.own_guard().note(_FUNCTION_CALL)  # any function, by its oid
            tracker.push(r.FUNCTION)
            out.append(msg)
        elif kind == _X:
            self._close_now("client sent Terminate")
        else:
            raise ProtocolError(f"unexpected message type {chr(kind)!r} from client")

    def _hold_until_described(self, msg: bytes, tracker: r.ResponseTracker) -> None:
        """`msg` names a statement whose result type the connection is yet to report: it
        and the client's next messages wait (`statement_described`)."""
        tracker.described = False
        self._held = msg
        self._set_state(_DESCRIBING)

    def statement_described(self) -> None:
        """The connection reported a statement's result type: the held message goes on."""
        if self.state is _DESCRIBING:
            self._set_state(_READY)
            self.resume_reading()
            self._drain()

    def note_effect(self, effect: Effect, sql: bytes, tracker: r.ResponseTracker) -> None:
        """`_note_sql` for a statement of the extended protocol, as it is bound to run."""
        self._note_effect(effect, sql, tracker)

    def _note_sql(self, sql: bytes, tracker: r.ResponseTracker, query: bytes) -> bool | None:
        """Track settings and pin on session state the SQL leaves behind; True when
        the SQL reset settings, so the client's startup values must be restored; None
        when the proxy answered the Query message `query` itself (not to be sent)."""
        effect = classify_bytes(sql)
        if effect is NO_EFFECT:
            if self.settings.pending:  # a savepoint command may undo some of them
                self._note_changes(savepoint_changes(sql), tracker)
            return False
        if effect.deallocate is not None and self._answered(query, tracker):
            return None
        return self._note_effect(effect, sql, tracker)

    def _note_effect(self, effect: Effect, sql: bytes, tracker: r.ResponseTracker) -> bool:
        if not effect.changes and self.settings.pending:
            self._note_changes(savepoint_changes(sql), tracker)  # they may undo some
        if effect is NO_EFFECT:
            return False
        if effect.deallocate is not None:  # one the proxy could not answer
            effect = _DEALLOCATE_ALL if effect.deallocate == "" else _DEALLOCATE_ONE
        if effect.writes or effect.opaque:  # what the guard notes
            self.own_guard().note(effect)
        if effect.pin and not self.pinned:
            self.pin(effect.pin)
        if effect.custom:
            self._created_custom(effect.custom)
            self._pin_reset_custom(effect.changes)
        if effect.drops_statements and _drops_statements(sql, tracker):
            self.statements.clear()
            tracker.forget_statements()
        if effect.schema:  # statements prepared until now may be stale; again once it ends
            self.statements.names.schema_changed()
            tracker.stale_plan = True
        if effect.dropped_database:
            self.proxy.release_database(effect.dropped_database)
        self._note_changes(effect.changes, tracker)
        return self.settings.resets_noted

    def _note_changes(self, changes: tuple[Change, ...], tracker: r.ResponseTracker) -> None:
        if changes:
            if not self.settings.pending:
                tracker.rolled_back = False
            self.own_settings().note(changes, tracker.errors)

    def _answered(self, msg: bytes, tracker: r.ResponseTracker | None) -> bool:
        """Answer a Query that is one DEALLOCATE of the client's own statements (the
        server knows them by other names); True if the proxy did."""
        own = bool(self.pinned) or self.statements.max_prepared == 0  # names the server's
        reply = self.statements.answer_deallocate(msg, tracker, own)
        if reply is None:
            return False
        self.stats.queries += 1
        self.transport_write(reply)
        server = self.server
        if tracker is not None and tracker.status == _STATUS_IN_BLOCK and server is not None:
            # directly, a DEALLOCATE in a transaction takes its snapshot (REPEATABLE READ
            # reads the database as of then, a later SET TRANSACTION fails): so must this
            tracker.push(r.QUERY_SKIP)
            server.write(_TAKE_SNAPSHOT)
        return True

    def _pin_reset_custom(self, changes: tuple[Change, ...]) -> None:
        """RESET of a custom setting defines it in the session for good, empty: later
        reads give '' instead of NULL or 42704. A connection where one is created is
        never lent again, so only the client's own connection keeps giving ''."""
        if self.pinned:
            return
        for change in changes:
            name = change.name
            if (
                change.kind is ChangeKind.RESET
                and "." in name
                and name not in self.settings.startup
            ):
                self.pin(f"RESET {name}")
                return

    def _created_custom(self, name: str) -> None:
        """A custom (dotted) setting may now exist on the connection: it must not be lent again."""
        server = self.server
        if server is not None and not server.custom_setting:
            server.custom_setting = name

    def _send_restoring(self, kind: int, msg: bytes, out: list[bytes]) -> None:
        """Send a request that reset settings, then the restore of the client's startup values."""
        server = self.server
        assert server is not None
        tracker = server.tracker
        settings = self.own_settings()  # (its own already: it noted a reset)
        out.append(msg)
        plain = r.QUERY if kind == r.QUERY_RESTORING else r.SYNC
        if kind == r.QUERY_RESTORING and b"stdin" in msg.lower():
            # a restore sent behind a COPY FROM STDIN would arrive in the middle of it
            settings.resets_noted = False  # the next borrow replays the startup values
            tracker.push(plain)
            return
        plan = settings.restore()
        if plan is None or tracker.awaiting_sync:  # (a failed batch reset nothing)
            tracker.push(plain)
            return
        names, sql = plan
        tracker.push_restoring(kind, frozenset(name.encode() for name in names))
        out.append(m.message(b"Q", sql + b"\x00"))

    async def cancel_running(self) -> None:
        """A CancelRequest with this client's key: stop its query, or its wait."""
        server = self.server
        if self.state is _CHECKING:
            return  # nothing of the client's runs: the proxy's own check does
        if server is not None:

            def running() -> bool:  # the statement may finish while Sluice connects
                return self.server is server and server.tracker.outstanding > 0

            await self.proxy.send_cancel(server.backend_pid, server.backend_secret, running)
        elif self.waiting:
            self.fail(QueryCanceled("canceling statement due to user request"), fatal=False)

    # ---- relay: server to client ----

    def server_idle(self, server: ServerConn) -> None:
        """The server answered everything and is outside a transaction."""
        if self._sent_at:
            self.stats.query_latency.observe(clock_now() - self._sent_at)
            self._sent_at = 0.0
        if self.settings.has_pending:
            self._commit_settings(server)
        if server.tracker.stale_plan:  # a schema change is now visible to every connection
            server.tracker.stale_plan = False
            self.statements.names.schema_changed()
        if self.pinned or self.switches.session_mode:
            return
        if self.guard.opaque:  # (it stays set until the check has answered)
            if self.state is _CHECKING:
                self._checked(server)
            else:
                self._set_state(_CHECKING)  # the client's next messages wait
                self.guard.start_check(server)
            return
        self._release()

    def _checked(self, server: ServerConn) -> None:
        """The state check answered: pin, or let the connection go, then carry on."""
        found = self.guard.finish_check(server, self.own_settings())  # it may adopt some
        if found is RECHECK:
            self.guard.start_check(server)  # the precise check; the client still waits
            return
        self._set_state(_READY)
        self.guard.opaque = False
        if found is None:
            self.server = None
            server.detach()
            assert self.pool is not None
            # what the session holds is unknown: nobody may borrow it
            self.pool.on_discard(self, server, "the state check after opaque SQL failed")
        else:
            if found.custom:
                self._created_custom(found.custom)
            if found.temp_schema:
                server.retire = TEMP_SCHEMA
            if found.pin and not self.pinned:
                self.pin(found.pin)
            if not self.pinned:
                self._release()
        self.resume_reading()
        self._drain()

    def _commit_settings(self, server: ServerConn) -> None:
        tracker = server.tracker
        if not self.settings.commit(server.own_params(), tracker.errors, tracker.rolled_back):
            server.params_dirty = True  # an error: what the server holds is unknown
        # A pinned or session-mode client's connection is its own session: what the server
        # did (a rollback after an error, a SET inside a DO block) is what it would have done
        # directly, so nothing is replayed over it; the reset when the client leaves clears it.

    def _sync_settings(self, server: ServerConn) -> bytes:
        """The queries (their replies swallowed, an error fatal) that give `server` this
        client's settings."""
        queries = replay_queries(
            self.settings.params,
            server.params,
            server.params_dirty,
            self.proxy.config.pool.init_query,
        )
        for _ in queries:
            server.tracker.push(r.REPLAY)
        if self.settings.shared:  # read only: the connection shares it until it changes
            server.params, server.params_shared = self.settings.params, True
        else:
            server.params, server.params_shared = dict(self.settings.params), False
        server.params_dirty = False
        if self.settings.custom_startup and not server.custom_setting:
            server.custom_setting = self.settings.custom_startup
        return b"".join(m.message(b"Q", sql + b"\x00") for sql in queries)

    def replay_failed(self, server: ServerConn, error: bytes) -> None:
        """The server refused to replay this client's settings: it must not go on without them."""
        fields = m.parse_error_fields(error)
        why = f"{fields.get('C', '')}: {fields.get('M', '')}"
        # the connection's settings are unknown and the client's request may be behind it
        server.close(f"replaying a client's session settings failed ({why})")
        self.fail(ServerError(f"could not restore this session's settings on a connection ({why})"))

    def _release(self) -> None:
        server = self.server
        assert server is not None and self.pool is not None
        self.server = None
        self.resume_reading()  # in case the server's full buffer had paused us
        if self.guard.left:
            self.guard.on_detach(server)
        server.detach()
        self.pool.on_release(self, server)

    def _report_lost(self, server: ServerConn) -> None:
        """If the server said why (a FATAL error, already relayed), that is the client's
        one reply, as directly: a second error would answer a command twice."""
        if server.tracker.fatal:
            self._close_now("the database ended the session with a FATAL error")
            return
        self.fail(ServerError("server connection lost; the transaction was not completed"))

    # ---- ending ----

    def _send_error(self, exc: SluiceError, fatal: bool, seq: int) -> None:
        """`exc` in PostgreSQL's format; FATAL errors end the session."""
        assert self.transport is not None
        text = f'password authentication failed for user "{self.user}"'
        text = text if isinstance(exc, AuthFailed) else str(exc)
        severity = "FATAL" if fatal else "ERROR"
        self.transport.write(m.error_response(exc.sqlstate, text, severity, exc.detail))

    def _wait_refused(self, held: bytes | None) -> None:
        if held is not None and held[0] != _Q:
            self._skip_to_sync = True  # as the server would: ignore up to the Sync
        else:
            self.transport_write(m.READY_IDLE)

    def _leave(self, server: ServerConn) -> None:
        if self.guard.left:
            self.guard.on_detach(server)
