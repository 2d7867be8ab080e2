"""The states of a client session and the moves between them (see `sluice.session.frontend`)."""

from __future__ import annotations

import enum


class ClientState(enum.Enum):
    __hash__ = object.__hash__  # identity: cheap on the relay path

    STARTUP = "startup"
    READY = "ready"
    WAITING = "waiting"
    CHECKING = "checking"
    DESCRIBING = "describing"
    CLOSED = "closed"


CLIENT_TRANSITIONS = {
    ClientState.STARTUP: {ClientState.READY, ClientState.CLOSED},
    ClientState.READY: {
        ClientState.WAITING,
        ClientState.CHECKING,
        ClientState.DESCRIBING,
        ClientState.STARTUP,
        ClientState.CLOSED,
    },
    ClientState.WAITING: {ClientState.READY, ClientState.CLOSED},
    ClientState.CHECKING: {ClientState.READY, ClientState.CLOSED},
    ClientState.DESCRIBING: {ClientState.READY, ClientState.CLOSED},
    ClientState.CLOSED: set(),
}
