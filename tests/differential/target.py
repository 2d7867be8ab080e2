"""What the runner needs from an engine: endpoints, client sessions and the target's state."""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass
from typing import Any, Protocol

from .program import ClientSpec, Step

Observation = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """Where clients connect: the database itself or a proxy in front of it."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def at(self, host: str, port: int) -> Endpoint:
        return Endpoint(host, port, self.user, self.password, self.database)


class Session(Protocol):
    """One client: `open` connects, `run` performs a step; both return what it observed."""

    def open(self) -> Observation: ...

    def run(self, step: Step) -> Observation: ...

    def close(self) -> None: ...


class Target(Protocol):
    """A throwaway server with the schema every run starts from."""

    engine: str
    endpoint: Endpoint
    pool_timeout: object  # the error code of the proxy's "no connection within borrow_timeout"

    def session(self, spec: ClientSpec, endpoint: Endpoint) -> Session: ...

    def reset(self) -> None: ...

    def final_state(self) -> dict[str, Any]: ...

    def kill_clients(self) -> None: ...

    def proxy(self, port: int, pool_size: int) -> dict[str, Any]: ...


def plain(row: Any) -> list[Any]:
    """A result row as JSON values (what is compared and saved)."""
    return [_value(v) for v in row]


def _value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta | decimal.Decimal):
        return f"{type(value).__name__}:{value}"
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    return f"{type(value).__name__}:{value!r}"
