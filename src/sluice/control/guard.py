"""The guarded front of a DB instance: its security groups enforced at its own address.

An instance Sluice runs listens on an address of its own in its subnet at the
engine's port, as on AWS, but its database server listens elsewhere (a
loopback port of its own, `backend`). `InstanceGuard` holds the instance's
address: for each new connection it asks `admits(client address)` (the
instance's security groups, read afresh, so an authorize or a revoke counts
for the next connection) and then either relays the connection's bytes both
ways (`control.relay`) or refuses it the way the engine refuses a host it
does not know:

- MySQL/MariaDB: ERR 1130 "Host '...' is not allowed to connect to this
  MariaDB server" in place of the greeting, then close;
- PostgreSQL: the client speaks first, so its startup packet is read (an
  SSLRequest or GSSENCRequest is declined with "N"), then FATAL 28000 as
  pg_hba.conf's refusal is, then close.

The relayed connection to the server leaves from the client's own address
when it can (any 127/8 address is local), so the database sees who is
connected as it would with the client in front of it. Connections are
bounded (`MAX_CONNECTIONS`), beyond which clients get the engine's "too many
connections" error, and so are connections being refused (`MAX_OPEN` in all:
beyond, a new connection is dropped without a word). The refusals are built
here without I/O (`Refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import cast

from sluice.control.relay import Pipe, link
from sluice.errors import ProtocolError
from sluice.wire.mysql import constants as mc
from sluice.wire.mysql.packets import frame
from sluice.wire.pg import messages as pm
from sluice.wire.pg.framing import MessageReader

log = logging.getLogger("sluice.control")

MAX_CONNECTIONS = 1000  # relayed at once, per instance
MAX_OPEN = 2 * MAX_CONNECTIONS  # relayed or being refused: beyond, a connection is dropped
STARTUP_TIMEOUT = 10.0  # a refused PostgreSQL client has this long to send its startup packet
CONNECT_TIMEOUT = 10.0  # to reach the database server


class Refusal:
    """What a refused client is told, fed with what it sends (no I/O).

    `first` is sent at once; `feed(data)` returns (bytes to send, done); when
    done, the connection is closed after sending.
    """

    def __init__(self, engine: str, address: str, reason: str, port: int) -> None:
        self.engine = engine
        self.address = address
        self.reason = reason  # "host": not admitted; "busy": too many connections
        self.port = port
        self._reader = MessageReader(1 << 16)

    def first(self) -> bytes:
        if self.engine == "postgres":
            return b""  # a PostgreSQL server waits for the startup packet
        if self.reason == "busy":
            return frame(_err_without_state(mc.ER_CON_COUNT_ERROR[0], "Too many connections"), 0)
        text = f"Host '{self.address}' is not allowed to connect to this MariaDB server"
        return frame(_err_without_state(mc.ER_HOST_NOT_PRIVILEGED[0], text), 0)

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if self.engine != "postgres":
            return b"", True
        self._reader.feed(data)
        out = b""
        while True:
            try:
                packet = self._reader.next_startup()
                if packet is None:
                    return out, False
                parsed = pm.parse_startup(packet)
            except ProtocolError:
                return out, True
            if isinstance(parsed, pm.CancelRequest):
                return out, True
            if not isinstance(parsed, pm.SSLRequest | pm.GSSENCRequest):
                return out + self._fatal(parsed.params), True
            out += b"N"  # no encryption here: the refusal follows in clear

    def _fatal(self, params: dict[str, str]) -> bytes:
        if self.reason == "busy":
            return pm.error_response("53300", "sorry, too many clients already", "FATAL")
        user = params.get("user", "")
        database = params.get("database") or user
        text = (f'no pg_hba.conf entry for host "{self.address}", user "{user}", '
                f'database "{database}", no encryption')  # fmt: skip
        detail = (f"No security group rule of the DB instance admits connections from "
                  f"{self.address} on port {self.port}.")  # fmt: skip
        return pm.error_response("28000", text, "FATAL", detail)


def _err_without_state(code: int, text: str) -> bytes:
    """An ERR before the handshake: no SQLSTATE marker (the client's capabilities are
    not known yet), as the server sends it."""
    return b"\xff" + code.to_bytes(2, "little") + text.encode(errors="replace")


class _Refusing(asyncio.Protocol):
    """A refused connection: tell the client why in the engine's words, then close."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not
        first = self.refusal.first()
        if first:
            transport.write(first)
            transport.close()  # a MySQL client is refused before anything it sends
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(STARTUP_TIMEOUT, transport.close)  # no startup: go

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        reply, done = self.refusal.feed(data)
        if reply:
            self.transport.write(reply)
        if done:
            self.transport.close()  # refused: after the answer is sent

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class InstanceGuard:
    """The listener at a DB instance's address; see the module docstring."""

    def __init__(
        self, name: str, engine: str, address: tuple[str, int], backend: tuple[str, int],
        admits: Callable[[str], bool],
    ) -> None:  # fmt: skip
        self.name = name
        self.engine = engine  # "postgres", or a MySQL engine
        self.address = address
        self.backend = backend
        self.admits = admits
        self._server: asyncio.Server | None = None
        self._pipes: set[Pipe] = set()  # every open client connection
        self._relayed = 0  # of which admitted
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen at the instance's address (OSError if it cannot)."""
        loop = asyncio.get_running_loop()
        host, port = self.address
        self._server = await loop.create_server(self._accept, host, port, reuse_address=True)

    async def stop(self) -> None:
        """Stop listening and drop every relayed connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pipe in list(self._pipes):
            pipe.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5.0)

    def _accept(self) -> asyncio.Protocol:
        return _Inbound(self)

    # ---- one connection ----

    def decide(self, transport: asyncio.Transport) -> asyncio.Protocol | None:
        """None when the client may go on to the database, else the protocol refusing it."""
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        if not self.admits(client):
            log.info("DB instance %s refused a connection from %s: no security group rule "
                     "admits it on port %d", self.name, client, self.address[1])  # fmt: skip
            return _Refusing(Refusal(self.engine, client, "host", self.address[1]))
        if self._relayed >= MAX_CONNECTIONS:
            log.warning("DB instance %s refused a connection from %s: %d connections open",
                        self.name, client, self._relayed)  # fmt: skip
            return _Refusing(Refusal(self.engine, client, "busy", self.address[1]))
        return None

    def arrived(self, inbound: Pipe) -> bool:
        """Count a new client connection; False when there are too many to answer at all."""
        if len(self._pipes) >= MAX_OPEN:
            return False
        self._pipes.add(inbound)
        return True

    def relay(self, inbound: Pipe, client: str) -> None:
        self._relayed += 1
        task = asyncio.get_running_loop().create_task(self._connect(inbound, client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, pipe: Pipe, relayed: bool) -> None:
        if pipe in self._pipes:
            self._pipes.discard(pipe)
            self._relayed -= relayed

    async def _connect(self, inbound: Pipe, client: str) -> None:
        """Open the server side, from the client's address when possible, and join them."""
        loop = asyncio.get_running_loop()
        outbound = Pipe()
        host, port = self.backend
        try:
            sock = _socket_from(client)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            await loop.create_connection(lambda: outbound, sock=sock)
        except (OSError, TimeoutError) as exc:
            log.warning("DB instance %s: cannot reach its server for a client: %s", self.name, exc)
            inbound.close()  # the server is down (rebooting, stopped): as a refused connection
            return
        if inbound.lost:
            outbound.close()  # the client left while the server was being reached
            return
        link(inbound, outbound)


_NOT_LOCAL = (errno.EADDRNOTAVAIL, errno.EINVAL)  # the client's address is not one of ours
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


def _socket_from(client: str) -> socket.socket:
    """A non-blocking TCP socket bound to the client's address (when it is one of ours).

    Made by hand rather than by `create_connection(local_addr=...)`, which resolves both
    numeric addresses again for every connection; the port is chosen at connect time
    (IP_BIND_ADDRESS_NO_PORT), so a busy client address does not run out of ports.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with contextlib.suppress(OSError):  # an older kernel: the port is chosen at bind
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((client, 0))
    except OSError as exc:
        if exc.errno not in _NOT_LOCAL:
            sock.close()
            raise
    return sock


class _Inbound(Pipe):
    """A client's connection: admitted and relayed, or handed to a refusing protocol."""

    def __init__(self, guard: InstanceGuard) -> None:
        super().__init__(on_close=lambda: guard.forget(self, self._refusing is None))
        self.guard = guard
        self._refusing: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        if not self.guard.arrived(self):
            self.transport.abort()  # beyond every bound (a flood): dropped unanswered
            return
        refusing = self.guard.decide(self.transport)
        if refusing is not None:
            self._refusing = refusing
            refusing.connection_made(transport)
            return
        peer = self.transport.get_extra_info("peername")
        self.guard.relay(self, str(peer[0]))

    def data_received(self, data: bytes) -> None:
        if self._refusing is not None:
            self._refusing.data_received(data)
        else:
            super().data_received(data)

    def eof_received(self) -> bool:
        if self._refusing is not None:
            return False  # close
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refusing is not None:
            self._refusing.connection_lost(exc)
        super().connection_lost(exc)
