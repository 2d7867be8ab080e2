"""A PostgreSQL proxy: one listener, its clients, and its pools per (database, user)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sluice.pg.client import ClientSession
from sluice.pg.pgpool import PgPool
from sluice.pg.startup import VerifiedSettings
from sluice.proxy import Proxy
from sluice.wire.pg import messages as m

if TYPE_CHECKING:
    from sluice.app import App
    from sluice.config import ProxyConfig

log = logging.getLogger("sluice.proxy")
_Q, _P = ord("Q"), ord("P")


class PgProxy(Proxy):
    """Listener, clients and pools of one configured PostgreSQL proxy."""

    engine = "postgresql"
    clients: set[ClientSession]
    pools: dict[tuple[str, str], PgPool]
    verified_settings: VerifiedSettings  # startup settings the server accepted

    def __init__(self, app: App, config: ProxyConfig) -> None:
        super().__init__(app, config)
        self.verified_settings = VerifiedSettings()

    def new_session(self) -> ClientSession:
        return ClientSession(self)

    def database_allowed(self, database: str) -> bool:
        return bool(database)

    def pool_for(self, database: str, user: str) -> PgPool:
        pool = self.pools.get((database, user))
        if pool is None:
            pool = PgPool(self, database, user)
            self.pools[(database, user)] = pool
        return pool

    def log_message(self, client: ClientSession, msg: bytes) -> None:
        """debug_logging: the SQL of a Query or Parse message a client sent."""
        kind = msg[0]
        if kind == _Q:
            self.log_statement(client, msg[5:-1])
        elif kind == _P:  # Parse: statement name, NUL, query, NUL, parameter types
            name_end = msg.find(b"\0", 5)
            self.log_statement(client, msg[name_end + 1 : msg.find(b"\0", name_end + 1)])

    async def send_cancel(self, pid: int, secret: int) -> None:
        """Ask the target to cancel the query of backend `pid` (a fresh connection, as libpq)."""
        target = self.config.target
        try:
            async with asyncio.timeout(target.connect_timeout):
                _, writer = await asyncio.open_connection(target.host, target.port)
                writer.write(m.cancel_request(pid, secret))
                await writer.drain()
                writer.close()
        except (OSError, TimeoutError) as exc:
            log.warning(
                "proxy %s: cancel request to the database failed: %s", self.config.name, exc
            )
