"""What a client session is, whatever the engine.

States (one owner, `FrontendSession._set_state`):

    STARTUP -> READY <-> WAITING      READY -> STARTUP (MySQL COM_CHANGE_USER)
    READY <-> CHECKING                (any) -> CLOSED

STARTUP is the engine's login coroutine; READY relays; WAITING waits for a
connection from the pool; CHECKING holds the client's next messages while the
proxy asks its connection what state opaque SQL left behind (PostgreSQL).
This base holds the state machine, the questions the proxy asks of a session
(idle? logging in? in a transaction?) and backpressure in both directions: a
full client socket pauses the server connection's reading, a full server
socket pauses the client's.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import time
from typing import Any

from sluice.errors import PoolTimeout, ServerError, SluiceError

# Pin reasons that are not variable assignments, though they begin with SET.
_NOT_VARIABLE_SETS = frozenset(
    {"SET ROLE", "SET RESOURCE GROUP", "SET TRANSACTION", "SET SESSION TRANSACTION",
     "SET SESSION AUTHORIZATION", "SET SESSION CHARACTERISTICS", "SET SESSION "}
)  # fmt: skip


def is_variable_set(reason: str) -> bool:
    """Whether a pin reason is a variable assignment (what RDS Proxy's
    EXCLUDE_VARIABLE_SETS filter, `exclude_variable_sets`, leaves unpinned)."""
    if reason == "user variable":
        return True
    return reason.startswith("SET ") and reason not in _NOT_VARIABLE_SETS


class ClientState(enum.Enum):
    __hash__ = object.__hash__  # identity: cheap on the relay path

    STARTUP = "startup"
    READY = "ready"
    WAITING = "waiting"
    CHECKING = "checking"
    CLOSED = "closed"


_TRANSITIONS = {
    ClientState.STARTUP: {ClientState.READY, ClientState.CLOSED},
    ClientState.READY: {
        ClientState.WAITING,
        ClientState.CHECKING,
        ClientState.STARTUP,
        ClientState.CLOSED,
    },
    ClientState.WAITING: {ClientState.READY, ClientState.CLOSED},
    ClientState.CHECKING: {ClientState.READY, ClientState.CLOSED},
    ClientState.CLOSED: set(),
}


class FrontendSession(asyncio.Protocol):
    """State, borrowing and backpressure of one client connection; engines add the rest.

    Borrowing: `_acquire_or_wait` lends a connection at once, or parks the message
    that needed it (`_held`) and waits on a pool future; `_server_ready` then
    hands the connection to the engine (`_on_borrowed`), which replays the parked
    message. A wait that ends in an error is reported in the engine's format.
    """

    # set by the engines' sessions
    pool: Any
    stats: Any

    __slots__ = (
        "_held",
        "_paused",
        "_request",
        "_wait_started",
        "quiet_from",
        "server",
        "state",
        "transport",
    )

    def __init__(self) -> None:
        self.state = ClientState.STARTUP
        self.transport: asyncio.Transport | None = None
        self.server: Any = None
        self._paused = False
        self._held: Any = None  # the message that needed a connection, while waiting
        self._request: asyncio.Future[Any] | None = None
        self._wait_started = 0.0
        self.quiet_from = 0.0  # (idle_transaction_timeout) not waiting for the client before

    def _set_state(self, new: ClientState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"client {self.state.value} -> {new.value} is not allowed")
        self.state = new

    @property
    def closed(self) -> bool:
        return self.state is ClientState.CLOSED

    @property
    def idle(self) -> bool:
        """Logged in, holding no connection and waiting for none."""
        return self.state is ClientState.READY and self.server is None

    @property
    def waiting(self) -> bool:
        return self.state is ClientState.WAITING

    @property
    def in_transaction(self) -> bool:
        """Holding a connection that is inside a transaction or running a query."""
        return self.server is not None and not self.server.tracker.idle

    @property
    def idle_in_transaction(self) -> bool:
        """Holding a connection in a transaction, with nothing of the client's running."""
        return self.server is not None and self.server.tracker.idle_in_transaction

    # ---- borrowing ----

    def _acquire_or_wait(self, held: object) -> Any:
        """A connection now, or None after starting to wait for one with `held` parked."""
        server = self.pool.pool.try_acquire()
        if server is None:
            self._held = held
            self._set_state(ClientState.WAITING)
            self._wait_started = time.monotonic()
            self._request = self.pool.pool.request()
            self._request.add_done_callback(self._server_ready)
            return None
        self.stats.borrow_latency.observe(0.0)
        return server

    def _server_ready(self, fut: asyncio.Future[Any]) -> None:
        """The pool answered our wait: a connection, or an error such as a borrow timeout."""
        self._request = None
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, SluiceError):
                self.fail(exc, fatal=not isinstance(exc, PoolTimeout))
            else:
                self.fail(ServerError(f"cannot borrow a database connection: {exc}"))
            return
        server = fut.result()
        if self.state is not ClientState.WAITING:
            self.pool.pool.release(server)  # the client left while waiting
            return
        waited = time.monotonic() - self._wait_started
        self.stats.borrow_wait_total += waited
        self.stats.borrow_latency.observe(waited)
        self._set_state(ClientState.READY)
        self._on_borrowed(server)
        self.resume_reading()
        self._drain()

    @abc.abstractmethod
    def _on_borrowed(self, server: Any) -> None:
        """Attach a connection that arrived after a wait."""

    @abc.abstractmethod
    def _drain(self) -> None:
        """Relay whatever complete messages the client has sent."""

    @abc.abstractmethod
    def fail(self, exc: SluiceError, fatal: bool = True) -> None:
        """Report `exc` to the client in the engine's format."""

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
