"""What happens around a pool, whatever the engine: lending, pinning, clients leaving.

`EnginePool` wraps the engine-agnostic `Pool` for one engine's connections and
decides what becomes of a connection its client leaves behind: back to the
pool when idle; reset first (the engine's `reset`) when the client was pinned
or in session mode; closed, after stopping what runs (`abandon`), when a
transaction or query was still open, so no transaction or lock outlives its
client. It also keeps the counts the metrics and the admin console show.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from sluice.errors import ServerError
from sluice.pool.pool import Pool, PoolLimits
from sluice.session.backend import BackendConn, BackendState

if TYPE_CHECKING:
    from sluice.auth.base import Authenticator
    from sluice.config import ProxyConfig
    from sluice.pool.budget import Share
    from sluice.session.services import Services

log: Final = logging.getLogger("sluice.pool")
# The states as the compiled build reads them fastest: C globals, not attributes of the
# enum class (whose metaclass makes every attribute read a slower lookup).
_CLOSED: Final = BackendState.CLOSED


def limits_for(config: ProxyConfig) -> PoolLimits:
    """A proxy's pool settings, as the engine-agnostic pool takes them."""
    pool = config.pool
    return PoolLimits(
        borrow_timeout=pool.borrow_timeout,
        lifetime=pool.server_lifetime,
        idle_timeout=pool.server_idle_timeout,
        check_delay=pool.server_check_delay,
    )


class PoolClient(Protocol):
    """What a pool needs of the client sessions that borrow from it."""

    pinned: str  # why the client keeps its connection, "" if it does not
    user: str

    @property
    def peer(self) -> str: ...


class PoolHost(Protocol):
    """What a pool needs of its proxy (engines add their own needs)."""

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def app(self) -> Services: ...

    @property
    def authenticator(self) -> Authenticator: ...

    @property
    def backend_tls(self) -> ssl.SSLContext | None: ...

    @property
    def share(self) -> Share: ...

    @property
    def target_max_connections(self) -> int | None: ...

    def learned_max_connections(self, value: int) -> None: ...


ServerT = TypeVar("ServerT", bound=BackendConn[Any, Any])
HostT = TypeVar("HostT", bound=PoolHost)


class EnginePool(abc.ABC, Generic[ServerT, HostT]):
    """Backend connections of one engine for one pool key (`HostT`: what the engine's
    pools need of its proxy)."""

    pool: Pool[ServerT]
    proxy: HostT
    user: str
    database: str

    def __init__(self) -> None:
        self.servers: set[ServerT] = set()
        self.in_transaction = 0
        self.pinned = 0

    @abc.abstractmethod
    def abandon(self, server: ServerT) -> None:
        """Stop what `server` runs for a client that left (cancel, KILL QUERY)."""

    @abc.abstractmethod
    async def reset(self, server: ServerT) -> None:
        """Make `server` forget a client's session state; raise ServerError if it cannot."""

    def keep(self, conn: ServerT) -> None:
        """A new connection: watch for it dying on its own."""
        conn.on_lost.append(self._lost)
        self.servers.add(conn)

    def _lost(self, conn: ServerT) -> None:
        self.servers.discard(conn)
        self.pool.remove_idle(conn)

    # ---- events from client sessions ----

    def on_attach(self, client: PoolClient) -> None:
        self.in_transaction += 1

    def on_release(self, client: PoolClient, server: ServerT) -> None:
        self.in_transaction -= 1
        self.pool.stats.transactions += 1
        self.pool.release(server)

    def on_pin(self, client: PoolClient, reason: str) -> None:
        self.pinned += 1
        self.pool.stats.pins += 1
        log.info("client %s user=%s pinned to its connection: %s", client.peer, client.user, reason)

    def client_left(self, client: PoolClient, server: ServerT) -> None:
        """A client went away (or changed user) holding `server`."""
        self.in_transaction -= 1
        if client.pinned:
            self.pinned -= 1
        server.detach()
        if server.state is _CLOSED:
            self.pool.forget(server)
        elif self.must_close(server):
            self.abandon(server)
            server.close("client disconnected during a transaction")
            self.pool.forget(server)
        elif client.pinned or self.proxy.config.pool.mode == "session" or not server.tracker.idle:
            # (not idle here: only the proxy's own check still runs; the reset waits for it)
            asyncio.get_running_loop().create_task(self._reset_then_release(server))
        else:
            self.pool.release(server)

    def must_close(self, server: ServerT) -> bool:
        """Whether a connection its client left must be closed: a transaction is open."""
        return not server.tracker.idle

    def server_gone(self, client: PoolClient, server: ServerT) -> None:
        """The connection `client` held broke (the client's session ends with it)."""
        self.in_transaction -= 1
        if client.pinned:
            self.pinned -= 1
            client.pinned = ""
        self.pool.forget(server)

    def on_discard(self, client: PoolClient, server: ServerT, reason: str) -> None:
        """Close the connection `client` borrowed, without ending the client's session."""
        self.in_transaction -= 1
        server.close(reason)
        self.pool.forget(server)

    async def _reset_then_release(self, server: ServerT) -> None:
        try:
            await self.reset(server)
        except (ServerError, TimeoutError):
            server.close("reset after a pinned or session-mode client failed")
            self.pool.forget(server)
            return
        self.pool.release(server)

    def snapshot(self) -> dict[str, float]:
        """Numbers for the metrics exporter and the admin console."""
        pool, now = self.pool, time.monotonic()
        oldest = min((c.idle_since for c in pool.idle), default=now)
        return {
            "idle": len(pool.idle),
            "borrowed": pool.borrowed,
            "opening": pool.opening,
            "waiting": len(pool.waiters),
            "in_transaction": self.in_transaction,
            "pinned": self.pinned,
            "max": pool.share.limit,
            "oldest_idle_age": now - oldest,
        }
