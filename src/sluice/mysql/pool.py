"""The MySQL side of a pool: opening connections, syncing sessions, what happens on return.

Pools are per (user, capability profile, character set): capabilities such as
CLIENT_DEPRECATE_EOF, CLIENT_FOUND_ROWS or CLIENT_MULTI_STATEMENTS change what
the server sends, so a connection only serves clients that asked for the same.
A borrowed connection is given the client's tracked settings and schema first
(commands of the proxy's own, their replies swallowed); a connection whose
settings are unknown (an error mid-SET) is reset with COM_RESET_CONNECTION.
A client that leaves mid-transaction has its connection closed (the server
rolls back); a pinned or session-mode client's connection is reset before reuse.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sluice.errors import ServerAuthFailed, ServerError, UnknownDatabase
from sluice.mysql.server import MyServerConn, open_server
from sluice.pool.pool import Pool
from sluice.proxy import limits_for
from sluice.session.pooling import EnginePool
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.login import LoginClient

if TYPE_CHECKING:
    from sluice.mysql.client import MyClientSession
    from sluice.mysql.proxy import MyProxy

log = logging.getLogger("sluice.pool")

# Capabilities that change what a server sends: a connection serves one profile.
PROFILE_BITS = (
    c.CLIENT_FOUND_ROWS
    | c.CLIENT_IGNORE_SPACE
    | c.CLIENT_MULTI_STATEMENTS
    | c.CLIENT_MULTI_RESULTS
    | c.CLIENT_PS_MULTI_RESULTS
    | c.CLIENT_SESSION_TRACK
    | c.CLIENT_DEPRECATE_EOF
    | c.CLIENT_LOCAL_FILES
)
# What every backend connection asks for, whatever the profile.
BASE_BITS = (
    c.CLIENT_LONG_PASSWORD
    | c.CLIENT_LONG_FLAG
    | c.CLIENT_PROTOCOL_41
    | c.CLIENT_TRANSACTIONS
    | c.CLIENT_SECURE_CONNECTION
    | c.CLIENT_PLUGIN_AUTH
    | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | c.CLIENT_CONNECT_ATTRS
)


class MyPool(EnginePool):
    """Backend connections for one (proxy, user, capability profile, charset)."""

    def __init__(self, proxy: MyProxy, user: str, profile: int, charset: int) -> None:
        super().__init__()
        self.proxy = proxy
        self.user = user
        self.database = ""
        self.profile = profile
        self.charset = charset
        self.name = f"{proxy.config.name}/{user}/{profile:x}/{charset}"
        self.pool: Pool[MyServerConn] = Pool(
            self.name, limits_for(proxy.config), self._connect, proxy.share
        )
        self.schemas: set[str] = set()  # databases this user was seen to be allowed into

    async def _connect(self) -> MyServerConn:
        proxy, target = self.proxy, self.proxy.config.target
        login = proxy.authenticator.backend_login(self.user)
        if login is None:
            raise ServerAuthFailed(f"no database credentials for user {self.user!r}")

        def make(tls: bool) -> LoginClient:
            return LoginClient(
                login.user,
                login.password,
                tls=tls,
                capabilities=BASE_BITS | self.profile,
                charset=self.charset,
                attributes={"program_name": "sluice"},
            )

        conn = await open_server(
            self.name,
            target.host,
            target.port,
            make,
            tls=proxy.backend_tls,
            tls_required=target.tls not in ("disable", "prefer"),
            tls_server_name=target.tls_server_name,
            init_query=proxy.config.pool.init_query,
            connect_timeout=target.connect_timeout,
            max_size=proxy.app.settings.max_packet_size,
        )
        self.keep(conn)
        if conn.max_connections and proxy.target_max_connections != conn.max_connections:
            proxy.learned_max_connections(conn.max_connections)
        proxy.server_version = conn.server_version + "-sluice"
        return conn

    async def kill_query(self, thread_id: int) -> None:
        """KILL QUERY on the target, over a short-lived connection of the same user."""
        try:
            conn = await self._connect()
        except (ServerError, OSError) as exc:
            log.warning("pool %s: cannot connect to kill a query: %s", self.name, exc)
            return
        try:
            await conn.run_own(cmd.query(f"KILL QUERY {int(thread_id)}"), timeout=5.0)
        except (ServerError, TimeoutError) as exc:
            log.info("pool %s: KILL QUERY %d failed: %s", self.name, thread_id, exc)
        finally:
            self.servers.discard(conn)
            conn.close("short-lived connection for KILL QUERY")

    async def check_schema(self, schema: str) -> None:
        """Fail a login that names a database the user cannot use (checked once)."""
        if schema in self.schemas:
            return
        conn = await self.pool.acquire()
        try:
            await conn.run_own(cmd.init_db(schema), timeout=10.0)
        except ServerError:
            raise UnknownDatabase(f"Unknown database '{schema}' or access denied") from None
        finally:
            self.pool.release(conn)  # its schema is now `schema` or unchanged
        conn.schema = schema
        self.schemas.add(schema)

    # ---- lending ----

    def sync(self, client: MyClientSession, server: MyServerConn) -> None:
        """Give `server` the client's schema and tracked settings (pipelined, swallowed)."""
        if server.dirty:
            server.send_command(bytes((c.COM_RESET_CONNECTION,)), own=True)
            server.settings, server.dirty = {}, False
            server.statements.clear()
            if self.proxy.config.pool.init_query:
                server.send_command(cmd.query(self.proxy.config.pool.init_query), own=True)
        if client.database and client.database != server.schema:
            server.send_command(cmd.init_db(client.database), own=True)
            server.schema = client.database
        if client.settings != server.settings:
            self._sync_settings(client.settings, server)

    def _sync_settings(self, want: dict[str, str], server: MyServerConn) -> None:
        if server.settings.keys() - want.keys():
            # No one statement restores every variable's login value (SET NAMES, tx_*
            # names differ between MySQL and MariaDB): reset, then replay the client's.
            server.send_command(bytes((c.COM_RESET_CONNECTION,)), own=True)
            server.statements.clear()
            server.settings = {}
            if self.proxy.config.pool.init_query:
                server.send_command(cmd.query(self.proxy.config.pool.init_query), own=True)
        for name, stmt in want.items():
            if server.settings.get(name) != stmt:
                server.send_command(cmd.query(stmt), own=True)
        server.settings = dict(want)

    def abandon(self, server: MyServerConn) -> None:
        if server.tracker.pending:  # a query still runs: kill it, the close rolls back
            self.proxy.app.spawn(self.kill_query(server.thread_id))

    async def reset(self, server: MyServerConn) -> None:
        await server.run_own(bytes((c.COM_RESET_CONNECTION,)), timeout=10.0)
        if self.proxy.config.pool.init_query:
            await server.run_own(cmd.query(self.proxy.config.pool.init_query), timeout=30.0)
        server.settings = {}
        server.statements.clear()
