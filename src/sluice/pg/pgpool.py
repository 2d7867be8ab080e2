"""The PostgreSQL side of a pool: how to open a connection, and what to do on return.

`Pool` (engine-agnostic) decides who gets which connection; `PgPool` opens
connections with the user's backend credentials, learns the server's startup
parameters for greeting clients, and decides what happens to a connection a
client leaves behind: back to the pool if idle, reset with DISCARD ALL if the
client was pinned or in session mode (or left while the proxy's state check
ran), closed instead if its session has a temporary schema (DISCARD ALL drops
the tables, not the schema), cancelled and closed if a transaction or query was
still running (so no transaction or lock outlives the client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

from sluice.errors import ServerAuthFailed, ServerError
from sluice.pg.guard import (
    HAS_TEMP_SCHEMA_SQL,
    NAMES_SQL,
    SETTINGS_SQL,
    TEMP_SCHEMA,
    quick_state_sql,
    read_baseline,
)
from sluice.pg.server import ServerConn, open_server
from sluice.pool.pool import Pool
from sluice.session.pooling import EnginePool, PoolHost, limits_for
from sluice.wire.pg.messages import parse_data_row

log: Final = logging.getLogger("sluice.pool")


class PgPoolHost(PoolHost, Protocol):
    """What a PostgreSQL pool needs of its proxy (`PgProxy`)."""

    async def send_cancel(
        self, pid: int, secret: int, wanted: Callable[[], bool] | None = None
    ) -> None: ...


class PgPool(EnginePool[ServerConn, "PgPoolHost"]):
    """Backend connections for one (proxy, database, user)."""

    def __init__(self, proxy: PgPoolHost, database: str, user: str) -> None:
        super().__init__()
        self.proxy = proxy
        self.database = database
        self.user = user
        self.name = f"{proxy.config.name}/{database}/{user}"
        self.pool = Pool(self.name, limits_for(proxy.config), self._connect, proxy.share)
        self.server_params: dict[str, str] | None = None
        self.quick_sql: bytes | None = None  # the quick state check's statement (guard.py)

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
            source_address=target.source_address,
        )
        if config.pool.init_query:  # what it sets is the pool's, not a client's
            conn.baseline = read_baseline(await conn.read_rows(SETTINGS_SQL, timeout=30.0))
        if self.quick_sql is None:  # the settings a session can change: the same for each
            rows = await conn.read_rows(NAMES_SQL, timeout=30.0)
            self.quick_sql = quick_state_sql(rows)
        conn.quick_sql = self.quick_sql
        self.keep(conn)
        if conn.max_connections and self.proxy.target_max_connections != conn.max_connections:
            self.proxy.learned_max_connections(conn.max_connections)
        if self.server_params is None:
            self.server_params = dict(conn.server_params)
        return conn

    async def greeting_params(self) -> dict[str, str]:
        """The server's startup parameters, opening a first connection if none was made."""
        if self.server_params is None:
            conn = await self.pool.acquire()
            self.pool.release(conn)
        assert self.server_params is not None
        return self.server_params

    # ---- events from client sessions ----

    def must_close(self, server: ServerConn) -> bool:
        """A transaction is open; a state check of the proxy's own may finish first."""
        return not server.tracker.idle and not server.tracker.settling

    def abandon(self, server: ServerConn) -> None:
        if server.tracker.outstanding:  # a query still runs: cancel it, the close rolls back
            self.proxy.app.spawn(self.proxy.send_cancel(server.backend_pid, server.backend_secret))

    async def reset(self, server: ServerConn) -> None:
        rows = await server.read_rows(HAS_TEMP_SCHEMA_SQL, timeout=10.0)
        if rows and parse_data_row(rows[0]) == [b"t"]:
            server.close(TEMP_SCHEMA)  # DISCARD ALL would leave the schema to the next client
            raise ServerError(TEMP_SCHEMA)
        await server.run_silently("DISCARD ALL", timeout=10.0)
        if self.proxy.config.pool.init_query:
            await server.run_silently(self.proxy.config.pool.init_query, timeout=30.0)
        server.params, server.params_shared = {}, False
        server.params_dirty = False
        server.leftover = 0  # DISCARD ALL forgot nextval() state, emptied custom settings
        server.tracker.forget_statements()
