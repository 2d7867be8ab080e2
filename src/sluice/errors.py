"""Errors that say whose fault they are.

`ClientError` and its children are the client's doing (bad protocol, wrong
password); `ServerError` comes from a database connection; `PoolTimeout` means
the pool had nothing to lend in time; `ConfigError` is a bad configuration.
Each error that reaches a client carries the SQLSTATE it is reported with.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""

    sqlstate = "XX000"
    severity = "FATAL"
    detail = ""  # a DETAIL line for the client, if any
    quiet = False  # counted and logged once per burst, not once per connection


class ConfigError(SluiceError):
    """The configuration file or snapshot is invalid."""


class ProtocolError(SluiceError):
    """The peer broke the wire protocol (malformed or oversized message)."""

    sqlstate = "08P01"


class PacketTooLarge(ProtocolError):
    """A message announced a length above the configured maximum."""

    sqlstate = "54000"


class ClientError(SluiceError):
    """Something the client did that ends its session."""

    sqlstate = "08P01"


class AuthFailed(ClientError):
    """Authentication failed; the message never names the reason to the client."""

    sqlstate = "28P01"
    quiet = True  # the throttle logs failed logins once per burst


class LoginThrottled(ClientError):
    """The client's address failed to log in too often: it is refused for a while."""

    sqlstate = "28000"
    quiet = True


class TooManyConnections(ClientError):
    """A cap on client connections, or on those still logging in, is reached."""

    sqlstate = "53300"
    quiet = True

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class OutOfFiles(TooManyConnections):
    """The process holds as many clients as its open file limit allows."""


class TLSRequired(ClientError):
    sqlstate = "28000"


class HostNotAllowed(ClientError):
    """The proxy's network rules do not admit the client's address."""

    sqlstate = "28000"


class UnknownDatabase(ClientError):
    sqlstate = "3D000"


class ServerError(SluiceError):
    """A backend connection failed or misbehaved."""

    sqlstate = "08006"


class ServerAuthFailed(ServerError):
    sqlstate = "08004"


class PoolTimeout(SluiceError):
    """No backend connection could be borrowed within the borrow timeout."""

    sqlstate = "53300"


class QueryCanceled(SluiceError):
    """The client cancelled a request that was still waiting for a connection."""

    sqlstate = "57014"
    severity = "ERROR"


class ShuttingDown(SluiceError):
    sqlstate = "57P01"
