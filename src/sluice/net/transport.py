"""The data plane's sockets, read and written by the proxy's own compiled code.

The event loop's transports cost, per connection, a libuv handle, a transport object and
the loop's map entries (about 1,200 bytes per idle client), and, per read, a callback of
their own that takes the interpreter's lock. Here every client and server socket of the
data plane sits in one epoll set per event loop (`Reactor`); the loop watches that one
descriptor and, when it is readable, `Reactor._ready` takes every socket that is ready in
one batch (one callback, one lock) and reads or writes each with `recv` / `send`.

`SocketTransport` is what the sessions write to and are called back by, with the
callbacks and semantics of an `asyncio.Transport` / `asyncio.Protocol` pair
(`connection_made`, `data_received`, `eof_received`, `connection_lost`, `pause_writing`,
`resume_writing`; `connection_lost` is called soon after the transport closed, never
from inside `close`). A write is tried at once; what the socket does not take is queued
and sent when it becomes writable (the protocol is told to pause above the high-water
mark). Reading can be paused, which takes the socket out of the epoll set.

TLS is done in the transport over memory buffers (`start_tls`): the session above sees
plaintext, as with the loop's `start_tls`, and keeps the same transport.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import logging
import select
import socket
import ssl
from typing import Any, Final

from mypy_extensions import trait

from sluice.net import sockio
from sluice.net.clock import CLOCK

log: Final = logging.getLogger("sluice.net")
# The socket calls (C where built), bound to Final names: compiled, C statics; a name
# imported from a module that is not compiled is a dictionary lookup at every call.
poll: Final = sockio.poll
recv: Final = sockio.recv
send: Final = sockio.send

_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_BROKEN: Final = select.EPOLLERR | select.EPOLLHUP
_TLS_READ: Final = 64 * 1024
_DEFAULT_HIGH: Final = 64 * 1024
_HANDSHAKE_TIMEOUT: Final = 60.0  # as the event loop's start_tls
# How long a closed connection may take to send what is queued for a peer that does not
# read (then it is dropped: a peer cannot keep a closed connection's socket open).
CLOSE_DRAIN_TIMEOUT: Final = 10.0
# Errors of a connection that ends the way connections do (logged at debug level).
_ORDINARY: Final = (ConnectionError, TimeoutError)

_reactors: Final[dict[asyncio.AbstractEventLoop, Reactor]] = {}


@trait
class Receiver:
    """A protocol compiled with the transport (the client sessions and the server
    connections): the bytes read reach it by a native call. Any other protocol gets them
    by `protocol.data_received`, a call by name (a type lookup and an argument parse,
    some three hundred instructions, twice a transaction)."""

    __slots__ = ()  # (interpreted, a base without slots gives every session a __dict__)

    @abc.abstractmethod
    def data_received(self, data: bytes) -> None:
        """The bytes read from the socket (plaintext, under TLS)."""


def reactor_of(loop: asyncio.AbstractEventLoop) -> Reactor:
    """The loop's epoll set of data-plane sockets, made when the first socket joins it."""
    reactor = _reactors.get(loop)
    if reactor is None:
        reactor = _reactors[loop] = Reactor(loop)
    return reactor


class Reactor:
    """One epoll set, watched by the event loop as one descriptor: the sockets in it are
    read and written in batches, each batch one callback of the loop."""

    __slots__ = ("count", "drain_timeout", "epoll", "fd", "listeners", "loop", "transports")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.fd = self.epoll.fileno()
        # The transports by descriptor: a list (a read by index where a dictionary would hash
        # and probe, for every ready socket), None where no transport is; 8 bytes for each
        # descriptor number the process has used, never given back.
        self.transports: list[SocketTransport | None] = []
        self.count = 0  # transports in it
        # Listening sockets are in the set too, so that what happened first is seen first:
        # a client that left before another arrived is gone when the next is counted.
        self.listeners: dict[int, Any] = {}  # fd -> what accepts (its `accept()`)
        self.drain_timeout = CLOSE_DRAIN_TIMEOUT
        loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        ready = poll(self.epoll)
        CLOCK.begin()  # (what this pass reads happened now, as `clock.now()` says)
        try:
            self._dispatch(ready)
        finally:
            CLOCK.end()

    def _dispatch(self, ready: list[int]) -> None:
        transports = self.transports
        for i in range(0, len(ready), 2):
            fd = ready[i]
            mask = ready[i + 1]
            transport = transports[fd] if fd < len(transports) else None
            if transport is None:
                listener = self.listeners.get(fd)
                if listener is not None:
                    listener.accept()
                continue  # (or closed by an earlier socket's callback in this batch)
            if mask & _OUT or (mask & _BROKEN and not transport.mask & _IN):
                transport._writable()
            if mask & (_IN | _BROKEN) and transport.mask & _IN:
                transport._readable()

    def join(self, transport: SocketTransport) -> None:
        transports, fd = self.transports, transport.fd
        if fd >= len(transports):
            transports.extend([None] * (fd + 1 - len(transports)))
        if transports[fd] is None:
            self.count += 1
        transports[fd] = transport

    def leave(self, transport: SocketTransport) -> None:
        """`transport`'s socket is about to close: out of the set (before its descriptor
        can be reused)."""
        transports, fd = self.transports, transport.fd
        if fd < len(transports) and transports[fd] is transport:
            transports[fd] = None
            self.count -= 1
        self._release_if_empty()

    def watch_listener(self, fd: int, listener: Any) -> None:
        """Call `listener.accept()` whenever the listening socket `fd` has clients waiting."""
        self.listeners[fd] = listener
        self.epoll.register(fd, _IN)

    def unwatch_listener(self, fd: int) -> None:
        if self.listeners.pop(fd, None) is not None:
            self.epoll.unregister(fd)
        self._release_if_empty()

    def _release_if_empty(self) -> None:
        """The last socket out closes the set."""
        if not self.count and not self.listeners and _reactors.get(self.loop) is self:
            del _reactors[self.loop]
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)
            self.epoll.close()


class TlsLayer:
    """TLS over memory buffers: what the socket brings goes in, plaintext comes out."""

    __slots__ = ("done", "incoming", "obj", "outgoing", "raw", "waiter")

    def __init__(self, ctx: ssl.SSLContext, server_side: bool, server_hostname: str | None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=server_hostname
        )
        # The C object under `ssl.SSLObject`, whose methods are Python functions that only
        # pass the call on: called directly, each record costs one call, not two.
        self.raw: Any = getattr(self.obj, "_sslobj", self.obj)
        self.done = False
        self.waiter: asyncio.Future[None] | None = None

    def handshake(self) -> None:
        """One step of the handshake: done, or wanting more bytes (errors are raised)."""
        try:
            self.raw.do_handshake()
        except ssl.SSLWantReadError:
            return
        self.done = True

    def plaintext(self) -> tuple[bytes, bool]:
        """The plaintext the bytes fed so far complete, and whether the peer closed TLS."""
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = self.raw.read(_TLS_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            if not self.incoming.pending and not self.raw.pending():
                break  # all read: the next read would only raise SSLWantReadError
        if len(chunks) == 1:
            return chunks[0], closed
        return b"".join(chunks), closed


class SocketTransport:
    """One connected, non-blocking socket of the data plane, in its loop's epoll set."""

    __slots__ = (
        "_eof_pending",
        "_finished",
        "_high",
        "_low",
        "_out",
        "_out_size",
        "_paused",
        "_writing_paused",
        "closing",
        "fd",
        "mask",
        "peername",
        "protocol",
        "reactor",
        "receiver",
        "sock",
        "tls",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, protocol: Any, peername: Any) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol = protocol
        # the protocol, where it is a Receiver (data_received by a native call)
        self.receiver: Receiver | None = protocol if isinstance(protocol, Receiver) else None
        self.peername = peername  # None: asked of the socket when wanted (not kept per client)
        self.mask = 0  # what the epoll set watches for: _IN, _OUT, or both
        self.closing = False
        self.tls: TlsLayer | None = None
        self._finished = False
        self._paused = False
        self._eof_pending = False
        self._out: list[bytes] | None = None  # what waits for the socket (made when needed)
        self._out_size = 0
        self._high = _DEFAULT_HIGH
        self._low = _DEFAULT_HIGH // 4
        self._writing_paused = False
        reactor.join(self)

    def start(self) -> None:
        """Tell the protocol it is connected, then read (called soon after the socket
        connected, as the event loop's transports do: after what is already due)."""
        if self.closing:
            return
        self.protocol.connection_made(self)
        if not self.closing and not self._paused:
            self._watch(self.mask | _IN)

    # ---- what a protocol calls (asyncio.Transport's methods) ----

    def write(self, data: bytes) -> None:
        if self.closing:
            return  # (as the event loop's transports: a write after close goes nowhere)
        tls = self.tls
        if tls is not None:
            tls.raw.write(data)
            data = tls.outgoing.read()
        self._send(data)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        tls = self.tls
        if tls is not None and tls.done:
            self._say_goodbye(tls)
        if self._out_size:
            self._watch(_OUT)  # the queue goes out first, then the socket closes
            self.reactor.loop.call_later(self.reactor.drain_timeout, self._drain_expired)
        else:
            self._finish(None)

    def _drain_expired(self) -> None:
        if not self._finished:
            self._force_close(None)

    def abort(self) -> None:
        self._force_close(None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            tls = self.tls
            if not self.closing and (tls is None or tls.done):
                self._watch(self.mask & ~_IN)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if not self.closing:
                self._watch(self.mask | _IN)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _DEFAULT_HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high = high
        self._low = low

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def can_write_eof(self) -> bool:
        return self.tls is None

    def write_eof(self) -> None:
        if self.closing or self._eof_pending:
            return
        self._eof_pending = True
        if not self._out_size:
            self._shutdown_write()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            if self.peername is None:
                try:
                    return self.sock.getpeername()
                except OSError:
                    return default
            return self.peername
        if name == "socket":
            return self.sock
        if name == "sockname":
            try:
                return self.sock.getsockname()
            except OSError:
                return default
        if name == "ssl_object" and self.tls is not None:
            return self.tls.obj
        return default

    # ---- TLS ----

    async def start_tls(
        self,
        ctx: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        early: bytes = b"",
    ) -> None:
        """TLS from here on: the handshake, then every byte both ways through it.
        `early`: bytes of the handshake the protocol has already read (a MySQL client's
        ClientHello comes right behind its SSLRequest, often in the same segment).
        Raises what failed the handshake (and closes the connection)."""
        if self.closing:
            raise ConnectionResetError("the connection closed before TLS started")
        tls = TlsLayer(ctx, server_side, server_hostname)
        waiter = tls.waiter = self.reactor.loop.create_future()
        self.tls = tls
        if early:
            tls.incoming.write(early)
        self._watch(self.mask | _IN)  # the handshake reads, paused or not
        self._handshake_step(tls)  # a client's hello goes out now
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT):
                await waiter
        except BaseException:
            self._force_close(None)
            raise
        finally:
            tls.waiter = None
        if self._paused and not self.closing:
            self._watch(self.mask & ~_IN)

    def _handshake_step(self, tls: TlsLayer) -> None:
        try:
            tls.handshake()
        except (ssl.SSLError, OSError) as exc:
            self._flush_tls(tls)  # the alert that tells the peer why
            self._handshake_over(tls, exc)
            return
        self._flush_tls(tls)
        if tls.done:
            self._handshake_over(tls, None)

    def _handshake_over(self, tls: TlsLayer, exc: BaseException | None) -> None:
        waiter = tls.waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        elif exc is not None:
            self._force_close(None)

    def _flush_tls(self, tls: TlsLayer) -> None:
        pending = tls.outgoing.read()
        if pending:
            self._send(pending)

    def _say_goodbye(self, tls: TlsLayer) -> None:
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            tls.obj.unwrap()  # close_notify
        self._flush_tls(tls)

    # ---- what the reactor calls ----

    def _readable(self) -> None:
        try:
            data = recv(self.fd)
        except OSError as exc:
            self._fatal(exc)
            return
        if data is None:
            return  # (woken for nothing)
        if not len(data):  # (a length read: the truth of bytes is a call, compiled)
            self._eof()
            return
        tls = self.tls
        if tls is not None:
            tls.incoming.write(data)
            if not tls.done:
                self._handshake_step(tls)
                if not tls.done or self.closing:
                    return
            try:
                data, closed = tls.plaintext()
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            self._flush_tls(tls)  # (session tickets, key updates)
            if data and not self.closing:
                self._deliver(data)
            if closed and not self.closing:
                self._eof()
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            receiver = self.receiver
            if receiver is not None:
                receiver.data_received(data)
            else:
                self.protocol.data_received(data)
        except Exception as exc:  # the protocol's bug: this connection ends, the others go on
            log.exception("closing %s: its protocol failed on the bytes it received", self.fd)
            self._force_close(exc)

    def _writable(self) -> None:
        out = self._out
        while out is not None and out:
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = send(self.fd, data)
            except OSError as exc:
                self._fatal(exc)
                return
            if not sent:
                return
            self._out_size -= sent
            out.clear()
            if sent < len(data):
                out.append(data[sent:])
                return
        self._watch(self.mask & ~_OUT)
        if self._writing_paused and self._out_size <= self._low:
            self._writing_paused = False
            self.protocol.resume_writing()
        if self.closing:
            self._finish(None)
        elif self._eof_pending:
            self._shutdown_write()

    # ---- inside ----

    def _send(self, data: bytes) -> None:
        """Bytes to the socket as they are: at once, or queued behind what waits."""
        if self._finished:
            return
        if self._out_size:
            self._queue(bytes(data))
            return
        try:
            sent = send(self.fd, data)
        except OSError as exc:
            self._fatal(exc)
            return
        if sent != len(data):
            self._queue(bytes(data[sent:]))
            self._watch(self.mask | _OUT)

    def _queue(self, data: bytes) -> None:
        if self._out is None:
            self._out = [data]
        else:
            self._out.append(data)
        self._out_size += len(data)
        if not self._writing_paused and self._out_size > self._high:
            self._writing_paused = True
            self.protocol.pause_writing()

    def _watch(self, mask: int) -> None:
        old = self.mask
        if mask == old or self._finished:
            return
        self.mask = mask
        epoll = self.reactor.epoll
        if old == 0:
            epoll.register(self.fd, mask)
        elif mask == 0:
            epoll.unregister(self.fd)
        else:
            epoll.modify(self.fd, mask)

    def _eof(self) -> None:
        self._watch(self.mask & ~_IN)
        self._paused = True
        if not self.protocol.eof_received():
            self.close()

    def _shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal(exc)

    def _fatal(self, exc: BaseException) -> None:
        if not isinstance(exc, _ORDINARY) and getattr(exc, "errno", None) not in (
            errno.EPIPE,
            errno.ECONNRESET,
            errno.ECONNABORTED,
            errno.ETIMEDOUT,
        ):
            log.warning("socket error on %s: %s", self.peername, exc)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        self.closing = True
        self._out = None
        self._out_size = 0
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        """Out of the epoll set now; the protocol told, and the socket closed, soon."""
        if self._finished:
            return
        self._watch(0)
        self._finished = True
        self.reactor.leave(self)
        tls = self.tls
        if tls is not None and tls.waiter is not None and not tls.waiter.done():
            tls.waiter.set_exception(
                ConnectionResetError("the connection closed during the TLS handshake")
            )
        self.reactor.loop.call_soon(self._lost, exc)

    def _lost(self, exc: BaseException | None) -> None:
        try:
            self.protocol.connection_lost(exc)
        finally:
            self.sock.close()
            self.protocol = self.receiver = None
