"""A connection from the proxy to a database server, whatever the engine.

States (one owner, `BackendConn._set_state`):

    CONNECTING -> IDLE <-> ACTIVE -> CLOSED

CONNECTING covers the engine's login; IDLE connections sit in their pool;
ACTIVE ones are lent to a client session. This base holds the state machine,
lending (`attach`/`detach`), backpressure in both directions, closing with a
logged reason, and the bookkeeping the pool reads (age, idle time,
generation). Engines add the login and the relay of replies.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from sluice.net.transport import Receiver, SocketTransport
from sluice.pool.pool import PooledConnection

log: Final = logging.getLogger("sluice.server")


class BackendState(enum.Enum):
    __hash__ = object.__hash__  # identity: cheap on the relay path

    CONNECTING = "connecting"
    IDLE = "idle"
    ACTIVE = "active"
    CLOSED = "closed"


# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CONNECTING: Final = BackendState.CONNECTING
_IDLE: Final = BackendState.IDLE
_ACTIVE: Final = BackendState.ACTIVE
_CLOSED: Final = BackendState.CLOSED

_TRANSITIONS: Final = {
    _CONNECTING: {_IDLE, _CLOSED},
    _IDLE: {_ACTIVE, _CLOSED},
    _ACTIVE: {_IDLE, _CLOSED},
    _CLOSED: set(),
}


class Borrowing(Protocol):
    """What this base needs of the client session a connection is lent to."""

    def server_lost(self, server: Any, /) -> None:
        """The connection closed under it (each engine's session takes its own kind)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Tracking(Protocol):
    """What this base needs of an engine's reply tracker."""

    @property
    def idle(self) -> bool:
        """Nothing outstanding: every request answered, no transaction open."""


ClientT = TypeVar("ClientT", bound=Borrowing)
TrackerT = TypeVar("TrackerT", bound=Tracking)


class BackendConn(PooledConnection, Receiver, Generic[ClientT, TrackerT]):
    """State, lending, backpressure and closing of one backend connection.

    Generic over the engine's client session (`client`, while lent) and its reply
    tracker (`tracker`), so that each engine reads both with their own types. Like a
    client session, it is the protocol of its socket's `SocketTransport` (see
    `FrontendSession`)."""

    goodbye: ClassVar[bytes] = b""  # what the engine sends before closing (Terminate, COM_QUIT)
    client: ClientT | None  # the engine's client session while lent, else None
    tracker: TrackerT  # the engine's reply tracker: `idle` when nothing is outstanding

    __slots__ = (
        "_waiter",
        "client",
        "close_reason",
        "on_lost",
        "peer",
        "pool_name",
        "reading_paused",
        "state",
        "tracker",
        "transport",
    )

    def __init__(self, pool_name: str) -> None:
        super().__init__()
        self.pool_name = pool_name
        self.state = _CONNECTING
        self.transport: SocketTransport | None = None
        self.client = None
        self.peer = ""
        self.close_reason = ""
        self.reading_paused = False
        self.on_lost: list[object] = []
        self._waiter: asyncio.Future[None] | None = None

    @property
    def backend_pid(self) -> int:
        return 0

    @property
    def prepared_count(self) -> int:
        """Server-side prepared statements the connection holds (engines count them)."""
        return 0

    @abc.abstractmethod
    async def check(self) -> bool:
        """Whether the connection still answers (the pool asks before lending a stale one)."""

    @property
    def broken(self) -> bool:
        """Not fit to lend: closed, or with a request or transaction still open."""
        return self.state is _CLOSED or not self.tracker.idle

    def _set_state(self, new: BackendState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"server {self.state.value} -> {new.value} is not allowed")
        self.state = new

    def attach(self, client: ClientT) -> None:
        if self.state is not _IDLE:  # (the one state that may become active: no lookup)
            self._set_state(_ACTIVE)
        self.state = _ACTIVE
        self.client = client

    def detach(self) -> None:
        self.resume_reading()  # never go back to the pool deaf
        self.client = None
        if self.state is _ACTIVE:
            self.state = _IDLE  # (always allowed)

    def close(self, reason: str) -> None:
        """Close the connection and say why (the reason is logged, never a secret)."""
        if self.state is _CLOSED:
            return
        self.close_reason = reason
        self._set_state(_CLOSED)
        log.info("closing server connection %s id=%s: %s", self.pool_name, self.backend_pid, reason)
        if self.transport is not None:
            if not self.transport.is_closing() and self.goodbye:
                self.transport.write(self.goodbye)
            self.transport.close()

    def mark_lost(self) -> bool:
        """The server closed the connection; True if it was not closing already."""
        if self.state is _CLOSED:
            return False
        self.close_reason = "server closed the connection"
        log.info("server connection %s id=%s lost", self.pool_name, self.backend_pid)
        self.state = _CLOSED
        return True

    def notify_lost(self, was_open: bool) -> None:
        self._wake()
        if self.client is not None and was_open:
            self.client.server_lost(self)
        for callback in self.on_lost:
            callback(self)  # type: ignore[operator]

    # ---- the socket's protocol callbacks (sluice.net.transport) ----

    def connection_made(self, transport: SocketTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)

    @abc.abstractmethod
    def data_received(self, data: bytes) -> None:
        """Bytes from the server (each engine relays or reads them)."""

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.notify_lost(self.mark_lost())

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    # ---- backpressure from the client ----

    def pause_reading(self) -> None:
        """The client cannot take more now (its write buffer is full)."""
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    # ---- waiting (login, checks) ----

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
