"""What the readers of the running proxies see of them, whatever the engine.

The metrics exporter and the admin console (`sluice.observe`) read proxies,
pools, client sessions and server connections only through these protocols:
they never import an engine or the program, so the engines can change
without them, and they cannot reach past what a view shows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sluice.config import ProxyConfig, Settings
    from sluice.pool.budget import Budgets
    from sluice.pool.pool import PoolStats
    from sluice.session.backend import BackendState
    from sluice.session.states import ClientState


class ProxyStats:
    """Counters since start (RDS Proxy's ClientConnections* metrics, and Sluice's own)."""

    __slots__ = (
        "auth_failures",
        "received",
        "refused",
        "setup_failed_auth",
        "setup_failed_tls",
        "setup_succeeded",
        "tls",
    )

    def __init__(self) -> None:
        self.received = 0
        self.setup_succeeded = 0
        self.setup_failed_auth = 0
        self.setup_failed_tls = 0
        self.tls = 0
        self.auth_failures = 0  # wrong passwords and unknown users
        self.refused = 0  # connections refused before login: a cap, or a blocked address


class ServerView(Protocol):
    """A backend connection, as `SHOW SERVERS` lists it."""

    @property
    def peer(self) -> str: ...

    @property
    def state(self) -> BackendState: ...

    @property
    def backend_pid(self) -> int: ...

    @property
    def created_at(self) -> float: ...

    @property
    def idle_since(self) -> float: ...

    @property
    def prepared_count(self) -> int: ...

    @property
    def client(self) -> ClientView | None: ...


class ClientView(Protocol):
    """A client session, as `SHOW CLIENTS` lists it and the pool counts read it."""

    @property
    def state(self) -> ClientState: ...

    @property
    def pool(self) -> PoolView | None: ...

    @property
    def server(self) -> ServerView | None: ...

    @property
    def peer(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def database(self) -> str: ...

    @property
    def tls(self) -> bool: ...

    @property
    def pinned(self) -> str: ...

    @property
    def admin_session(self) -> bool: ...

    @property
    def connected_at(self) -> float: ...

    @property
    def last_active(self) -> float: ...

    @property
    def application_name(self) -> str: ...


class LendingView(Protocol):
    """The engine-agnostic pool inside an engine's pool: its counters, and pausing."""

    @property
    def stats(self) -> PoolStats: ...

    @property
    def borrowed(self) -> int: ...

    @property
    def paused(self) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Session(ClientView, Protocol):
    """What a proxy needs of its client sessions (and what its readers see of them)."""

    last_active: float
    connected_at: float
    quiet_from: float
    cancel_key: tuple[int, int]
    address: str  # the peer's address, without the port
    user: str
    counted_login: bool  # holds a place among the proxy's logins
    wait_timeout: float  # the session's own idle limit (MySQL's wait_timeout), 0 if none

    async def cancel_running(self) -> None: ...

    @property
    def idle(self) -> bool: ...

    @property
    def logging_in(self) -> bool: ...

    @property
    def in_transaction(self) -> bool: ...

    @property
    def idle_in_transaction(self) -> bool: ...

    def fail_with(self, text: str, sqlstate: str) -> None: ...

    def fail_quietly(self, reason: str) -> None: ...


class PoolView(Protocol):
    """An engine's pool for one key (database, user, ...)."""

    @property
    def pool(self) -> LendingView: ...

    @property
    def database(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def servers(self) -> Collection[ServerView]: ...

    def snapshot(self) -> dict[str, float]: ...


class ProxyView(Protocol):
    """A proxy listener with its clients and pools."""

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def stats(self) -> ProxyStats: ...

    @property
    def clients(self) -> Collection[ClientView]: ...

    @property
    def pools(self) -> Mapping[tuple[str, str], PoolView]: ...


class Running(Protocol):
    """The running program, as its readers see it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def proxies(self) -> Mapping[str, ProxyView]: ...

    @property
    def budgets(self) -> Budgets: ...

    @property
    def started_at(self) -> float: ...

    async def reload(self) -> None: ...
