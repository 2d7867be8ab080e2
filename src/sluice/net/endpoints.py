"""Where the data plane's sockets come from: listeners that accept clients, and connections
out to the databases. Both hand each socket to a `SocketTransport` in the loop's epoll set.

`listen` does what the event loop's `create_server` does for a TCP listener (every address
the host resolves to, SO_REUSEADDR, SO_REUSEPORT when asked, IPV6_V6ONLY, the backlog)
and accepts in batches from its own callback; when the process runs out of descriptors
it stops accepting for a second rather than spinning. `connect` resolves the host and
tries its addresses in turn, from a source address if given, as `create_connection` does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

from sluice.net.transport import SocketTransport, reactor_of

log: Final = logging.getLogger("sluice.net")

_ACCEPT_BATCH: Final = 128  # clients accepted per callback at most
_ACCEPT_RETRY: Final = 1.0  # seconds without accepting after running out of descriptors
_OUT_OF_RESOURCES: Final = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

ProtocolFactory = Callable[[], Any]


def _nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Listener:
    """Listening sockets whose clients get a protocol from `factory` and a SocketTransport."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: ProtocolFactory,
        sockets: list[socket.socket],
    ) -> None:
        self.loop = loop
        self.factory = factory
        self.sockets = sockets
        self.closed = False
        self.reactor = reactor_of(loop)
        for sock in sockets:
            self.reactor.watch_listener(sock.fileno(), _Accepting(self, sock))

    def accept(self, listening: socket.socket) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.error("cannot accept clients on %s: %s", listening.getsockname(), exc)
                    self.reactor.unwatch_listener(listening.fileno())
                    self.loop.call_later(_ACCEPT_RETRY, self._resume, listening)
                else:
                    log.warning("accept failed on %s: %s", listening.getsockname(), exc)
                return
            try:
                sock.setblocking(False)
                _nodelay(sock)
            except OSError:
                sock.close()  # gone already
                continue
            try:
                protocol = self.factory()
            except Exception:  # (a bug of the factory's: this client is dropped, not the rest)
                log.exception("cannot take a client on %s", listening.getsockname())
                sock.close()
                continue
            transport = SocketTransport(self.reactor, sock, protocol, None)
            self.loop.call_soon(transport.start)

    def _resume(self, listening: socket.socket) -> None:
        if not self.closed:
            self.reactor = reactor_of(self.loop)
            self.reactor.watch_listener(listening.fileno(), _Accepting(self, listening))

    def close(self) -> None:
        """Stop accepting (connected clients stay)."""
        if self.closed:
            return
        self.closed = True
        for sock in self.sockets:
            self.reactor.unwatch_listener(sock.fileno())
            sock.close()


class _Accepting:
    """What the epoll set calls for one listening socket."""

    __slots__ = ("listener", "sock")

    def __init__(self, listener: Listener, sock: socket.socket) -> None:
        self.listener = listener
        self.sock = sock

    def accept(self) -> None:
        self.listener.accept(self.sock)


async def listen(
    factory: ProtocolFactory,
    host: str | None,
    port: int,
    *,
    reuse_port: bool = False,
    backlog: int = 100,
) -> Listener:
    """Listen on every address `host` resolves to (all interfaces if empty)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: {exc.strerror}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return Listener(loop, factory, sockets)


async def connect(
    factory: ProtocolFactory, host: str, port: int, *, source_address: str = ""
) -> tuple[SocketTransport, Any]:
    """A connection to `host`:`port` (its addresses tried in turn), from `source_address` if
    given; the protocol is told `connection_made` before this returns."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if source_address:
                sock.bind((source_address, 0))
            await loop.sock_connect(sock, address)
            _nodelay(sock)
            peer = sock.getpeername()
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        protocol = factory()
        transport = SocketTransport(reactor_of(loop), sock, protocol, peer)
        transport.start()
        return transport, protocol
    if not errors:
        raise OSError(f"cannot resolve {host}")
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")
