"""The PostgreSQL side of a pool: how to open a connection, and what to do on return.

`Pool` (engine-agnostic) decides who gets which connection; `PgPool` opens
connections with the user's backend credentials, learns the server's startup
parameters for greeting clients, and decides what happens to a connection a
client leaves behind: back to the pool if idle, reset with DISCARD ALL if the
client was pinned or in session mode, cancelled and closed if a transaction or
query was still running (so no transaction or lock outlives the client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sluice.errors import ServerAuthFailed, ServerError
from sluice.pg.server import ServerConn, open_server
from sluice.pool.pool import Pool
from sluice.proxy import limits_for
from sluice.session.backend import BackendState
from sluice.wire.pg import messages as m

if TYPE_CHECKING:
    from sluice.pg.client import ClientSession
    from sluice.pg.proxy import PgProxy

log = logging.getLogger("sluice.pool")


class PgPool:
    """Backend connections for one (proxy, database, user)."""

    def __init__(self, proxy: PgProxy, database: str, user: str) -> None:
        self.proxy = proxy
        self.database = database
        self.user = user
        self.name = f"{proxy.config.name}/{database}/{user}"
        self.pool: Pool[ServerConn] = Pool(
            self.name, limits_for(proxy.config, proxy.target_max_connections), self._connect
        )
        self.server_params: dict[str, str] | None = None
        self.servers: set[ServerConn] = set()
        self.in_transaction = 0
        self.pinned = 0

    async def _connect(self) -> ServerConn:
        config, target = self.proxy.config, self.proxy.config.target
        login = self.proxy.authenticator.backend_login(self.user)
        if login is None:
            raise ServerAuthFailed(f"no database credentials for user {self.user!r}")
        conn = await open_server(
            self.name,
            target.host,
            target.port,
            user=login.user,
            password=login.password,
            database=self.database,
            init_query=config.pool.init_query,
            tls=self.proxy.backend_tls,
            tls_mode=target.tls,
            tls_server_name=target.tls_server_name,
            connect_timeout=target.connect_timeout,
            max_size=self.proxy.app.settings.max_packet_size,
        )
        conn.on_lost.append(self._lost)
        self.servers.add(conn)
        if conn.max_connections and self.proxy.target_max_connections != conn.max_connections:
            self.proxy.learned_max_connections(conn.max_connections)
        if self.server_params is None:
            self.server_params = dict(conn.server_params)
        return conn

    def _lost(self, conn: object) -> None:
        assert isinstance(conn, ServerConn)
        self.servers.discard(conn)
        self.pool.remove_idle(conn)

    async def greeting_params(self) -> dict[str, str]:
        """The server's startup parameters, opening a first connection if none was made."""
        if self.server_params is None:
            conn = await self.pool.acquire()
            self.pool.release(conn)
        assert self.server_params is not None
        return self.server_params

    # ---- events from client sessions ----

    def on_attach(self, client: ClientSession) -> None:
        self.in_transaction += 1

    def on_release(self, client: ClientSession, server: ServerConn) -> None:
        self.in_transaction -= 1
        self.pool.stats.transactions += 1
        self.pool.release(server)

    def on_pin(self, client: ClientSession, reason: str) -> None:
        self.pinned += 1
        self.pool.stats.pins += 1
        log.info("client %s user=%s pinned to its connection: %s", client.peer, client.user, reason)

    def client_left(self, client: ClientSession, server: ServerConn) -> None:
        """A client went away holding `server`."""
        self.in_transaction -= 1
        if client.pinned:
            self.pinned -= 1
        server.detach()
        if server.state is BackendState.CLOSED:
            self.pool.forget(server)
        elif not server.tracker.idle:
            self._abandon(server)
        elif client.pinned or self.proxy.config.pool.mode == "session":
            asyncio.get_running_loop().create_task(self._reset(server))
        else:
            self.pool.release(server)

    def _abandon(self, server: ServerConn) -> None:
        """The client left mid-transaction: cancel what runs, close (the server rolls back)."""
        if server.tracker.queue:
            self.proxy.app.spawn(self.proxy.send_cancel(server.backend_pid, server.backend_secret))
        server.close("client disconnected during a transaction")
        self.pool.forget(server)

    async def _reset(self, server: ServerConn) -> None:
        try:
            await server.run_silently("DISCARD ALL", timeout=10.0)
            if self.proxy.config.pool.init_query:
                await server.run_silently(self.proxy.config.pool.init_query, timeout=30.0)
        except (ServerError, TimeoutError):
            server.close("reset after a session-level client failed")
            self.pool.forget(server)
            return
        server.params = {}
        server.params_dirty = False
        server.tracker.prepared.clear()
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
            "max": pool.limits.max_size,
            "oldest_idle_age": now - oldest,
        }


def cancel_packet(pid: int, secret: int) -> bytes:
    return m.cancel_request(pid, secret)
