"""A MySQL/MariaDB proxy: one listener, its clients, and its pools per (user, profile)."""

from __future__ import annotations

import asyncio
import logging

from sluice import __version__
from sluice.config import ProxyConfig
from sluice.mysql.client import MyClientSession, MyServices
from sluice.mysql.pool import PROFILE_BITS, MyPool
from sluice.proxy import Proxy
from sluice.session.views import Session
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.handshake import parse_handshake
from sluice.wire.mysql.packets import PacketReader

log = logging.getLogger("sluice.proxy")

# What Sluice offers clients (CLIENT_SSL added when the listener has TLS); compression is
# Sluice's own, with the client (never asked of the server).
OFFERED = (c.SUPPORTED_CAPABILITIES | c.CLIENT_LOCAL_FILES | c.CLIENT_COMPRESS) & ~c.CLIENT_SSL
_SQL_COMMANDS = frozenset({c.COM_QUERY, c.COM_STMT_PREPARE})


class MyProxy(Proxy[MyPool]):
    """Listener, clients and pools of one configured MySQL proxy."""

    engine = "mysql"
    app: MyServices

    def __init__(self, app: MyServices, config: ProxyConfig) -> None:
        super().__init__(app, config)
        self.server_version = f"8.0.0-sluice-{__version__}"

    def new_session(self) -> MyClientSession:
        return MyClientSession(self)

    async def start(self) -> None:
        await self._learn_version()
        await super().start()

    def apply(self, config: ProxyConfig) -> None:
        old = self.config.target
        super().apply(config)
        if (old.host, old.port) != (config.target.host, config.target.port):
            self.app.spawn(self._learn_version())

    async def _learn_version(self) -> None:
        """The target's version, from its greeting (no login needed); kept if unreachable."""
        target = self.config.target
        if not target.host:  # no target yet (a control-plane proxy before registration)
            return
        try:
            async with asyncio.timeout(target.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, local_addr=target.local_addr
                )
                packets = PacketReader(1 << 20)
                while (packet := packets.next()) is None:
                    data = await reader.read(65536)
                    if not data:
                        return
                    packets.feed(data)
                writer.close()
            version = parse_handshake(packet[1]).server_version
            self.server_version = f"{version}-sluice"
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("proxy %s: cannot read the database's version: %s", self.config.name, exc)
        except Exception as exc:  # a malformed greeting must not stop the proxy starting
            log.warning("proxy %s: unreadable database greeting: %s", self.config.name, exc)

    def log_command(self, client: Session, payload: bytes) -> None:
        """debug_logging: the SQL of a COM_QUERY or COM_STMT_PREPARE a client sent."""
        if payload[0] in _SQL_COMMANDS:
            self.log_statement(client, payload[1:])

    def capabilities(self) -> int:
        return OFFERED | (c.CLIENT_SSL if self.tls_context is not None else 0)

    def pool_for(self, user: str, capabilities: int, charset: int) -> MyPool:
        profile = capabilities & PROFILE_BITS
        key = (user, f"{profile:x}/{charset}")
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = MyPool(self, user, profile, charset)
        return pool
