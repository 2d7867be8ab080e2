"""What a client session is, whatever the engine.

States (one owner, `FrontendSession._set_state`; the table: `sluice.session.states`):

    STARTUP -> READY <-> WAITING      READY -> STARTUP (MySQL COM_CHANGE_USER)
    READY <-> CHECKING                (any) -> CLOSED

STARTUP is the engine's login coroutine; READY relays; WAITING waits for a
connection from the pool; CHECKING holds the client's next messages while the
proxy asks its connection what state opaque SQL left behind (PostgreSQL).
This base holds what both engines' sessions share: the state machine, the
connection's life (accepted, logged in by the engine's coroutine, lost,
closed with a logged reason), the questions the proxy asks of a session (idle?
logging in? in a transaction?), borrowing, pinning, and backpressure in both
directions: a full client socket pauses the server connection's reading, a
full server socket pauses the client's. Each engine adds its wire format: the
relay (`data_received`, `_drain`), its login steps and how it reports errors.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeAlias, TypeVar

from sluice.errors import (
    LoginThrottled,
    PoolTimeout,
    ServerError,
    SluiceError,
    TooManyConnections,
)
from sluice.net.transport import Receiver, SocketTransport
from sluice.observe.logs import clip
from sluice.pool.pool import Wait, Waiter
from sluice.session.admission import address_of
from sluice.session.backend import BackendConn
from sluice.session.pooling import EnginePool
from sluice.session.states import CLIENT_TRANSITIONS, ClientState

if TYPE_CHECKING:
    from sluice.config import ProxyConfig
    from sluice.pool.pool import PoolStats
    from sluice.session.services import Services
    from sluice.session.views import Session

log: Final = logging.getLogger("sluice.client")
# Bound to a Final name: compiled, a C static; imported, a dict lookup at every call.
monotonic: Final = time.monotonic
# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CLOSED: Final = ClientState.CLOSED
_READY: Final = ClientState.READY
_STARTUP: Final = ClientState.STARTUP
_WAITING: Final = ClientState.WAITING

# Pin reasons that are not variable assignments, though they begin with SET.
_NOT_VARIABLE_SETS: Final = frozenset(
    {"SET ROLE", "SET RESOURCE GROUP", "SET TRANSACTION", "SET SESSION TRANSACTION",
     "SET SESSION AUTHORIZATION", "SET SESSION CHARACTERISTICS", "SET SESSION "}
)  # fmt: skip


def is_variable_set(reason: str) -> bool:
    """Whether a pin reason is a variable assignment (what RDS Proxy's
    EXCLUDE_VARIABLE_SETS filter, `exclude_variable_sets`, leaves unpinned)."""
    if reason == "user variable":
        return True
    return reason.startswith("SET ") and reason not in _NOT_VARIABLE_SETS


class Switches:
    """The proxy's settings that the relay reads per message or per transaction, kept
    current by the proxy (on a reload, at shutdown). Each session holds the proxy's one
    object: the compiled build reads these as fields of a C struct, where reading them
    through the proxy (an interpreted object, typed by a protocol) is a lookup by name."""

    __slots__ = ("debug_logging", "session_mode", "stopping")

    def __init__(self, debug_logging: bool, session_mode: bool) -> None:
        self.debug_logging = debug_logging  # log every statement (redacted)
        self.session_mode = session_mode  # a client keeps its connection until it leaves
        self.stopping = False  # the program shuts down: no new borrowing


class SessionHost(Protocol):
    """What a client session needs of the proxy that accepted it."""

    @property
    def switches(self) -> Switches: ...

    @property
    def app(self) -> Services: ...

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def startup_stats(self) -> PoolStats: ...

    def client_connected(self, client: Session) -> Refusal | None: ...

    def client_logged_in(self, client: Session) -> None: ...

    def client_disconnected(self, client: Session) -> None: ...


Refusal: TypeAlias = TooManyConnections | LoginThrottled  # why the proxy would not take a client
HostT = TypeVar("HostT", bound=SessionHost)  # the engine's proxy
PoolT = TypeVar("PoolT", bound=EnginePool[Any, Any])  # the engine's pool
ServerT = TypeVar("ServerT", bound=BackendConn[Any, Any])
MessageT = TypeVar("MessageT")  # one client message as the engine's reader gives it


class FrontendSession(Waiter, Receiver, Generic[HostT, PoolT, ServerT, MessageT]):
    """State, life, borrowing and backpressure of one client connection; engines add the rest.

    Life: `connection_made` asks the proxy to take the client, then runs the
    engine's login coroutine (`_login`); READY follows it, or an error in the
    engine's format; `_close_now` is the one way out, and says why.

    Borrowing: `_acquire_or_wait` lends a connection at once, or parks the message
    that needed it (`_held`) and waits in the pool's queue; `pool_answered` then
    hands the connection to the engine (`_on_borrowed`), which replays the parked
    message. A wait that ends in an error is reported in the engine's format.

    A session is the protocol of its socket's `SocketTransport` (`sluice.net`): it has
    the callbacks of an `asyncio.Protocol` without deriving from it, so that the
    compiled build makes it a native class, and its transport is typed, so that its
    writes are direct calls.
    """

    _STEP: ClassVar[str] = "login"  # what the login is called in log lines and errors
    _NORMAL_ENDS: ClassVar[frozenset[str]] = frozenset()  # close reasons logged at debug level

    proxy: HostT
    pool: PoolT | None
    server: ServerT | None

    __slots__ = (
        "_handshake",
        "_held",
        "_paused",
        "_request",
        "_sent_at",
        "_wait_started",
        "_waiter",
        "address",
        "admin_session",
        "cancel_key",
        "close_reason",
        "connected_at",
        "counted_login",
        "database",
        "last_active",
        "pinned",
        "pool",
        "port",
        "proxy",
        "quiet_from",
        "server",
        "state",
        "stats",
        "switches",
        "tls",
        "transport",
        "user",
        "wait_timeout",
    )

    def __init__(self, proxy: HostT) -> None:
        self.proxy = proxy
        self.switches = proxy.switches
        self.state = _STARTUP
        self.transport: SocketTransport | None = None
        self.server = None
        self.pool = None
        self.user = ""
        self.database = ""
        self.address = ""  # the peer's address, interned: shared by its clients
        self.port = -1  # the peer's port, -1 if it has none (then `peer` is the address)
        self.counted_login = False  # holds a place among the proxy's logins
        self.tls = False
        self.pinned = ""  # why the client keeps its connection, "" if it does not
        self.admin_session = False  # logged in to the admin console, never relayed
        self.cancel_key = (0, 0)
        self.connected_at = monotonic()
        self.last_active = self.connected_at
        self.close_reason = ""
        self.stats: PoolStats = proxy.startup_stats  # the pool's own once the client logs in
        self._paused = False
        self._held: MessageT | None = None  # the message that needed a connection, while waiting
        self._request: Wait | None = None  # our place in the pool's queue, while waiting
        self._wait_started = 0.0
        self._waiter: asyncio.Future[None] | None = None  # the login waits for data
        self._handshake: asyncio.Task[None] | None = None  # the login coroutine's task
        self._sent_at = 0.0
        self.quiet_from = 0.0  # (idle_transaction_timeout) not waiting for the client before
        self.wait_timeout = 0.0  # the session's own idle limit (MySQL's wait_timeout), 0 if none

    @property
    def peer(self) -> str:
        """The client's end of the connection, "address:port" (made when read, for logs and
        the admin console: the string is not kept per client)."""
        return self.address if self.port < 0 else f"{self.address}:{self.port}"

    def _set_state(self, new: ClientState) -> None:
        if new not in CLIENT_TRANSITIONS[self.state]:
            raise RuntimeError(f"client {self.state.value} -> {new.value} is not allowed")
        self.state = new

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def idle(self) -> bool:
        """Logged in, holding no connection and waiting for none."""
        return self.state is _READY and self.server is None

    @property
    def waiting(self) -> bool:
        return self.state is _WAITING

    @property
    def in_transaction(self) -> bool:
        """Holding a connection that is inside a transaction or running a query."""
        return self.server is not None and not self.server.tracker.idle

    @property
    def idle_in_transaction(self) -> bool:
        """Holding a connection in a transaction, with nothing of the client's running."""
        return self.server is not None and self.server.tracker.idle_in_transaction

    @property
    def logging_in(self) -> bool:
        return self.state is _STARTUP and not self.admin_session

    @property
    @abc.abstractmethod
    def application_name(self) -> str:
        """What the client calls itself (PostgreSQL's application_name, MySQL's program_name)."""

    @abc.abstractmethod
    async def cancel_running(self) -> None:
        """Stop what the client's connection runs for it, or its wait for one."""

    @abc.abstractmethod
    def fail_with(self, text: str, sqlstate: str) -> None:
        """End the session with an error of the proxy's own (timeouts, shutdown)."""

    # ---- the socket's protocol callbacks: the connection's life ----

    def connection_made(self, transport: SocketTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = sys.intern(str(peer[0]))
            self.port = int(peer[1])
        else:
            self.address = sys.intern(address_of(str(peer or "unix")))
        refused = self.proxy.client_connected(self)
        if refused is not None and not self._linger(refused):
            self._refuse(refused)  # before reading anything: the cheapest answer there is
            return
        steps = self._run_login(lambda: self._login(refused))
        self._handshake = asyncio.get_running_loop().create_task(steps)

    @abc.abstractmethod
    def data_received(self, data: bytes) -> None:
        """Bytes from the client (each engine frames and relays them)."""

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not _CLOSED:
            self._close_now("client disconnected")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---- login ----

    @abc.abstractmethod
    def _login(self, refused: Refusal | None) -> Coroutine[Any, Any, None]:
        """The engine's login steps, from the first byte to the session's first ready state
        (`refused`: a client the proxy will not take, told so at the engine's moment)."""

    def _linger(self, refused: Refusal) -> bool:
        """Whether a refused client is still read from, to be told why later (`_login`)."""
        return False

    def _refuse(self, exc: SluiceError) -> None:
        """Answer a client the proxy would not take (the engine may say it otherwise)."""
        self.fail(exc)

    def _login_failed(self, exc: SluiceError) -> None:
        """Report an error that ended the login."""
        self.fail(exc)

    async def _run_login(self, steps: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run login `steps`; then relay, or end the session with the error that stopped them."""
        try:
            await steps()
        except SluiceError as exc:
            self._login_failed(exc)
            return
        except (ConnectionError, OSError) as exc:
            self._close_now(f"connection error during {self._STEP}: {exc}")
            return
        except Exception:  # our bug: this client gets an error, the proxy stays up
            log.exception("internal error during the %s of client %s", self._STEP, self.peer)
            self._login_failed(SluiceError(f"internal error in the proxy during {self._STEP}"))
            return
        finally:
            self._handshake = None
            self._waiter = None
        if self.state is _STARTUP:
            self._set_state(_READY)
            self.logged_in()
            self._drain()

    def logged_in(self) -> None:
        """The login is over (relay or admin console): the proxy's caps on logins no
        longer count this client, and its messages may be as large as configured."""
        self._reader_limit(self.proxy.app.settings.max_packet_size)
        self.proxy.client_logged_in(self)

    @abc.abstractmethod
    def _reader_limit(self, size: int) -> None:
        """The largest message the client may send from now on."""

    # ---- pinning ----

    def pin(self, reason: str) -> None:
        """Keep the borrowed connection until the client leaves, for `reason`."""
        if self.proxy.config.pool.exclude_variable_sets and is_variable_set(reason):
            return  # the operator chose to share such state rather than pin for it
        self.pinned = reason
        assert self.pool is not None
        self.pool.on_pin(self, reason)

    # ---- borrowing ----

    def _acquire_or_wait(self, held: MessageT) -> ServerT | None:
        """A connection now, or None after starting to wait for one with `held` parked."""
        assert self.pool is not None
        server: ServerT | None = self.pool.pool.try_acquire()
        if server is None:
            self._held = held
            self._set_state(_WAITING)
            self._wait_started = monotonic()
            self._request = self.pool.pool.wait(self)
            return None
        self.stats.borrow_latency.observe_zero()
        return server

    def pool_answered(self, wait: Wait) -> None:
        """The pool answered our wait: a connection, or an error such as a borrow timeout."""
        server: ServerT | None = wait.conn
        if wait is not self._request or self.state is not _WAITING:
            if server is not None:  # (a wait given up is never answered: defensive)
                assert self.pool is not None
                self.pool.pool.release(server)
            return
        self._request = None
        if server is None:
            exc: SluiceError = wait.error or ServerError("cannot borrow a database connection")
            self.fail(exc, fatal=not isinstance(exc, PoolTimeout))
            return
        waited = monotonic() - self._wait_started
        self.stats.borrow_wait_total += waited
        self.stats.borrow_latency.observe(waited)
        self._set_state(_READY)
        self._on_borrowed(server)
        self.resume_reading()
        self._drain()

    @abc.abstractmethod
    def _on_borrowed(self, server: ServerT) -> None:
        """Attach a connection that arrived after a wait."""

    @abc.abstractmethod
    def _drain(self) -> None:
        """Relay whatever complete messages the client has sent."""

    def server_lost(self, server: ServerT) -> None:
        """The borrowed connection broke: the client's transaction is gone."""
        self.server = None
        assert self.pool is not None
        self.pool.server_gone(self, server)
        self._report_lost(server)

    @abc.abstractmethod
    def _report_lost(self, server: ServerT) -> None:
        """Tell the client its connection broke, as the engine's server would."""

    # ---- ending ----

    @abc.abstractmethod
    def _send_error(self, exc: SluiceError, fatal: bool, seq: int) -> None:
        """Write `exc` to the client in the engine's format (`seq`: MySQL's sequence id)."""

    def fail(self, exc: SluiceError, fatal: bool = True, seq: int = 1) -> None:
        """Report `exc` to the client; fatal errors end the session, others a wait.
        `seq` is the sequence id of a MySQL error packet (PostgreSQL has none)."""
        if self.state is _CLOSED:
            return
        if self.transport is not None and not self.transport.is_closing():
            self._send_error(exc, fatal, seq)
        if fatal:
            self._close_now(f"{type(exc).__name__}: {exc}", exc.quiet)
        elif self.state is _WAITING:
            if self._request is not None:
                self._request.cancel()  # no longer waiting: never hand us a connection
                self._request = None
            self._set_state(_READY)
            held, self._held = self._held, None
            self._wait_refused(held)
            self.resume_reading()
            self._drain()

    def _wait_refused(self, held: MessageT | None) -> None:
        """A wait for a connection ended in an error: what becomes of the parked `held`."""

    def fail_quietly(self, reason: str) -> None:
        """End the session without a word (a timeout the server would end so too)."""
        self._close_now(reason)

    def _leave(self, server: ServerT) -> None:
        """What `server` must know when the client lets go of it (engines add to it)."""

    def _close_now(self, reason: str, quiet: bool = False) -> None:
        """Close for `reason`; `quiet`: one of many alike (a failed login), logged at debug."""
        if self.state is _CLOSED:
            return
        self.close_reason = reason
        self._set_state(_CLOSED)
        level = logging.DEBUG if quiet or reason in self._NORMAL_ENDS else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "client %s user=%s closed: %s", self.peer, clip(self.user), reason)
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        if self._request is not None:
            self._request.cancel()  # a cancelled waiter is never handed a connection
            self._request = None
        server, self.server = self.server, None
        if server is not None and self.pool is not None:
            self._leave(server)
            self.pool.client_left(self, server)
        self.proxy.client_disconnected(self)
        if self.transport is not None:
            self.transport.close()

    # ---- backpressure ----

    def pause_writing(self) -> None:
        if self.server is not None:
            self.server.pause_reading()

    def resume_writing(self) -> None:
        if self.server is not None:
            self.server.resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resume_reading()
