"""A PostgreSQL proxy: one listener, its clients, and its pools per (database, user)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sluice.pg.client import ClientSession, PgServices
from sluice.pg.pgpool import PgPool
from sluice.pg.startup import VerifiedSettings
from sluice.proxy import Proxy
from sluice.session.views import Session
from sluice.wire.pg import messages as m

if TYPE_CHECKING:
    from sluice.config import ProxyConfig

log = logging.getLogger("sluice.proxy")
_Q, _P = ord("Q"), ord("P")


class PgProxy(Proxy[PgPool]):
    """Listener, clients and pools of one configured PostgreSQL proxy."""

    engine = "postgresql"
    app: PgServices
    verified_settings: VerifiedSettings  # startup settings the server accepted

    def __init__(self, app: PgServices, config: ProxyConfig) -> None:
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

    def release_database(self, database: str) -> None:
        """A client drops `database`: close the idle connections to it, which the server
        would count as sessions using it (it waits a few seconds for them to end), and
        those being reset after their client left as soon as they come back."""
        for pool in self.pools.values():
            if pool.database == database:
                pool.pool.retire(f"a client drops the database {database}")

    def log_message(self, client: Session, msg: bytes) -> None:
        """debug_logging: the SQL of a Query or Parse message a client sent."""
        kind = msg[0]
        if kind == _Q:
            self.log_statement(client, msg[5:-1])
        elif kind == _P:  # Parse: statement name, NUL, query, NUL, parameter types
            name_end = msg.find(b"\0", 5)
            self.log_statement(client, msg[name_end + 1 : msg.find(b"\0", name_end + 1)])

    async def send_cancel(
        self, pid: int, secret: int, wanted: Callable[[], bool] | None = None
    ) -> None:
        """Ask the target to cancel the query of backend `pid` (a fresh connection, as libpq).

        Returns once the server has closed that connection: it has then signalled the
        backend (PostgreSQL signals it twice, the process and its group), so a client that
        waits for its own cancel connection to close, as libpq and asyncpg do, never has
        its next statement hit by the signal. `wanted`, asked once connected, right before
        the request is written: whether the statement to cancel is still running.
        """
        target = self.config.target
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(target.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, local_addr=target.local_addr
                )
                if wanted is not None and not wanted():
                    return  # it finished: the server would ignore the cancel of an idle backend
                writer.write(m.cancel_request(pid, secret))
                await writer.drain()
                await reader.read()  # until the server closes: the backend was signalled
        except (OSError, TimeoutError) as exc:
            log.warning(
                "proxy %s: cancel request to the database failed: %s", self.config.name, exc
            )
        finally:
            if writer is not None:
                writer.close()
