"""What a client session is, whatever the engine.

States (one owner, `FrontendSession._set_state`):

    STARTUP -> READY <-> WAITING      READY -> STARTUP (MySQL COM_CHANGE_USER)
    (any) -> CLOSED

STARTUP is the engine's login coroutine; READY relays; WAITING waits for a
connection from the pool. This base holds the state machine, the questions
the proxy asks of a session (idle? logging in? in a transaction?) and
backpressure in both directions: a full client socket pauses the server
connection's reading, a full server socket pauses the client's.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any


class ClientState(enum.Enum):
    __hash__ = object.__hash__  # identity: cheap on the relay path

    STARTUP = "startup"
    READY = "ready"
    WAITING = "waiting"
    CLOSED = "closed"


_TRANSITIONS = {
    ClientState.STARTUP: {ClientState.READY, ClientState.CLOSED},
    ClientState.READY: {ClientState.WAITING, ClientState.STARTUP, ClientState.CLOSED},
    ClientState.WAITING: {ClientState.READY, ClientState.CLOSED},
    ClientState.CLOSED: set(),
}


class FrontendSession(asyncio.Protocol):
    """State and backpressure of one client connection; engines add login and relay."""

    __slots__ = ("_paused", "server", "state", "transport")

    def __init__(self) -> None:
        self.state = ClientState.STARTUP
        self.transport: asyncio.Transport | None = None
        self.server: Any = None
        self._paused = False

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
