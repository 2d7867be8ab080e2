"""The MySQL side of a pool: opening connections, syncing sessions, what happens on return.

Pools are per (user, capability profile, character set): capabilities such as
CLIENT_DEPRECATE_EOF, CLIENT_FOUND_ROWS or CLIENT_MULTI_STATEMENTS change what
the server sends, so a connection only serves clients that asked for the same.
A borrowed connection is given the client's tracked settings, schema and
LAST_INSERT_ID() first (commands of the proxy's own, their replies swallowed).
A connection is reset before it is lent when its settings are unknown (an error
mid-SET) or when another client ran something opaque on it (a DO, a statement
the classifier does not know). A reset is COM_RESET_CONNECTION, then the login
role again (MariaDB keeps a role across the reset), then the init query. A
client that leaves mid-transaction has its connection closed (the server rolls
back); a pinned or session-mode client's connection is reset before reuse.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from mypy_extensions import trait

from sluice.errors import ServerAuthFailed, ServerError, UnknownDatabase
from sluice.mysql.server import MyServerConn, open_server
from sluice.pool.pool import Pool
from sluice.session.pooling import EnginePool, PoolHost, limits_for
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.login import LoginClient

log: Final = logging.getLogger("sluice.pool")

# Capabilities that change what a server sends: a connection serves one profile.
PROFILE_BITS: Final = (
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
BASE_BITS: Final = (
    c.CLIENT_LONG_PASSWORD
    | c.CLIENT_LONG_FLAG
    | c.CLIENT_PROTOCOL_41
    | c.CLIENT_TRANSACTIONS
    | c.CLIENT_SECURE_CONNECTION
    | c.CLIENT_PLUGIN_AUTH
    | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | c.CLIENT_CONNECT_ATTRS
)


class MyPoolHost(PoolHost, Protocol):
    """What a MySQL pool needs of its proxy (`MyProxy`)."""

    server_version: str  # the target's, learned from each new connection


@trait
class SessionState:
    """What a borrowing client's session gives the connection it borrows. A mypyc trait
    the session (`MyClientSession`) derives from: compiled, its fields are read directly
    on every borrow (through a Protocol, each would be a lookup by name)."""

    __slots__ = ()  # (interpreted, a base without slots gives every session a __dict__)

    database: str
    settings: dict[str, str]
    last_insert_id: int


class MyPool(EnginePool[MyServerConn, MyPoolHost]):
    """Backend connections for one (proxy, user, capability profile, charset)."""

    def __init__(self, proxy: MyPoolHost, user: str, profile: int, charset: int) -> None:
        super().__init__()
        self.proxy = proxy
        self.user = user
        self.database = ""
        self.profile = profile
        self.charset = charset
        self.name = f"{proxy.config.name}/{user}/{profile:x}/{charset}"
        self.pool = Pool(self.name, limits_for(proxy.config), self._connect, proxy.share)
        self.schemas: set[str] = set()  # databases this user was seen to be allowed into
        self.default_status = c.SERVER_STATUS_AUTOCOMMIT  # a fresh session's status flags

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
            source_address=target.source_address,
        )
        self.keep(conn)
        self.default_status = conn.tracker.status & c.SESSION_STATUS
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

    def sync(self, client: SessionState, server: MyServerConn) -> None:
        """Give `server` the client's schema, tracked settings and LAST_INSERT_ID()
        (pipelined, swallowed), after a reset if it may hold another's state."""
        database, settings, last_id = client.database, client.settings, client.last_insert_id
        if server.dirty or (server.tainted_by is not None and server.tainted_by is not client):
            self.send_reset(server)
        if database and database != server.schema:
            server.send_command(cmd.init_db(database), own=True)
            server.schema = database
        if (settings or server.settings) and settings != server.settings:  # (none: no compare)
            self._sync_settings(settings, server)
        known = server.last_insert_id
        if known is None or known != last_id:  # (narrowed: compiled, an integer compare)
            server.send_command(set_last_insert_id(last_id), own=True)
            server.last_insert_id = last_id

    def _sync_settings(self, want: dict[str, str], server: MyServerConn) -> None:
        if server.settings.keys() - want.keys():
            # No one statement restores every variable's login value (SET NAMES, tx_*
            # names differ between MySQL and MariaDB): reset, then replay the client's.
            self.send_reset(server)
        for name, stmt in want.items():
            if server.settings.get(name) != stmt:
                server.send_command(cmd.query(stmt), own=True)
        server.settings = dict(want)

    def send_reset(self, server: MyServerConn) -> None:
        """Make `server` a fresh session of its login again (pipelined, swallowed): its
        prepared statements, settings, variables and LAST_INSERT_ID() are gone."""
        server.send_command(cmd.RESET_CONNECTION, own=True)
        if server.role_reset:
            server.send_command(server.role_reset, own=True)
        self.after_reset(server)

    def after_reset(self, server: MyServerConn) -> None:
        """What a COM_RESET_CONNECTION (ours or a client's) leaves, and the init query."""
        init = self.proxy.config.pool.init_query
        if init:
            server.send_command(cmd.query(init), own=True)
        server.settings, server.dirty, server.tainted_by = {}, False, None
        server.statements.clear()
        server.last_insert_id = None if init else 0

    def abandon(self, server: MyServerConn) -> None:
        if server.tracker.pending:  # a query still runs: kill it, the close rolls back
            self.proxy.app.spawn(self.kill_query(server.thread_id))

    async def reset(self, server: MyServerConn) -> None:
        errors = server.tracker.errors
        self.send_reset(server)
        await server.settle(timeout=30.0)
        if server.tracker.errors != errors:
            raise ServerError("resetting the connection failed on the server")


def set_last_insert_id(value: int) -> bytes:
    """The own query that makes a session's LAST_INSERT_ID() `value`."""
    return cmd.query(f"SELECT LAST_INSERT_ID({int(value)})")
