"""Sluice's own errors as MySQL ERR packets, with MySQL's numbers and SQLSTATEs."""

from __future__ import annotations

from sluice.errors import (
    AuthFailed,
    ClientError,
    HostNotAllowed,
    LoginThrottled,
    PacketTooLarge,
    PoolTimeout,
    ProtocolError,
    QueryCanceled,
    ServerAuthFailed,
    ServerError,
    ShuttingDown,
    SluiceError,
    TLSRequired,
    TooManyConnections,
    UnknownDatabase,
)
from sluice.observe.logs import clip
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.messages import build_err

_BY_TYPE: tuple[tuple[type[SluiceError], tuple[int, str]], ...] = (
    (TLSRequired, c.ER_SECURE_TRANSPORT_REQUIRED),
    (HostNotAllowed, c.ER_HOST_NOT_PRIVILEGED),
    (LoginThrottled, c.ER_HOST_IS_BLOCKED),
    (PacketTooLarge, c.ER_NET_PACKET_TOO_LARGE),
    (AuthFailed, c.ER_ACCESS_DENIED_ERROR),
    (UnknownDatabase, c.ER_BAD_DB_ERROR),
    (ProtocolError, c.ER_HANDSHAKE_ERROR),
    (PoolTimeout, c.ER_BORROW_TIMEOUT),
    (QueryCanceled, c.ER_QUERY_INTERRUPTED),
    (ShuttingDown, c.ER_SERVER_SHUTDOWN),
    (ServerAuthFailed, c.ER_UNKNOWN_ERROR),
    (ServerError, c.ER_UNKNOWN_ERROR),
    (ClientError, c.ER_NET_READ_ERROR),
)

# The PostgreSQL SQLSTATEs the engine-neutral proxy code closes sessions with.
_BY_SQLSTATE = {
    "57P05": c.ER_NET_READ_INTERRUPTED,  # idle client timeout
    "57P01": c.ER_SERVER_SHUTDOWN,  # shutdown, proxy removed
    "08P01": c.ER_HANDSHAKE_ERROR,  # login timeout
    "25P03": c.ER_NET_READ_INTERRUPTED,  # idle transaction timeout (as MariaDB's own)
}


class MyError(SluiceError):
    """An error already expressed as a MySQL (number, SQLSTATE)."""

    def __init__(self, error: tuple[int, str], text: str) -> None:
        super().__init__(text)
        self.error = error


def error_for_sqlstate(text: str, sqlstate: str) -> MyError:
    return MyError(_BY_SQLSTATE.get(sqlstate, c.ER_UNKNOWN_ERROR), text)


def err_packet(exc: SluiceError, user: str, peer: str, tls: bool) -> bytes:
    """The ERR payload for `exc`; an auth failure reads as the server's own would."""
    if isinstance(exc, MyError):
        return build_err(exc.error, str(exc))
    if isinstance(exc, AuthFailed) and not isinstance(exc, TLSRequired):
        host = peer.rpartition(":")[0] or peer
        text = f"Access denied for user '{clip(user)}'@'{host}' (using password: YES)"
        return build_err(c.ER_ACCESS_DENIED_ERROR, text)
    if isinstance(exc, TooManyConnections):
        return build_err(c.ER_CON_COUNT_ERROR, f"Too many connections ({exc.detail})")
    for kind, error in _BY_TYPE:
        if isinstance(exc, kind):
            return build_err(error, str(exc))
    return build_err(c.ER_UNKNOWN_ERROR, str(exc))
