"""The data plane's own sockets (`sluice.net`), on real loopback sockets, under uvloop as
`sluice` runs and under asyncio's own loop as in-process tests do.

What a session relies on from a transport: bytes in order both ways, a write that the
socket cannot take queued and the protocol told to pause (and to resume once drained),
`close` sending what is queued before the end, `connection_lost` called once and never
from inside `close`, paused reading delivering nothing, TLS started on a connection that
is already open, and clients that left seen as gone before the next one is taken.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from certs import issue, make_ca
from sluice.net import clock
from sluice.net import transport as net
from sluice.net.endpoints import Listener, connect, listen
from sluice.net.transport import SocketTransport

Body = Callable[[], Awaitable[None]]


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Callable[[Body], None]:
    def runner(body: Body) -> None:
        if request.param == "uvloop":
            uvloop.run(body())
        else:
            asyncio.run(body())

    return runner


class Recorder:
    """A protocol that keeps what happened to it, in order."""

    def __init__(self, name: str = "", log: list[str] | None = None) -> None:
        self.name = name
        self.log = log if log is not None else []
        self.transport: SocketTransport | None = None
        self.data = bytearray()
        self.events: list[str] = []
        self.arrived = asyncio.Event()
        self.lost = asyncio.Event()
        self.in_close = False

    def connection_made(self, transport: SocketTransport) -> None:
        self.transport = transport
        self.events.append("made")
        self.log.append(f"made {self.name}")

    def data_received(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.data += data
        self.arrived.set()

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        assert not self.in_close, "connection_lost called from inside close()"
        self.events.append("lost")
        self.log.append(f"lost {self.name}")
        self.lost.set()

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def close(self) -> None:
        assert self.transport is not None
        self.in_close = True
        self.transport.close()
        self.in_close = False

    async def received(self, size: int) -> bytes:
        while len(self.data) < size:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        return bytes(self.data)


class Echo(Recorder):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        self.transport.write(data)


async def _serve(make: Callable[[], Recorder]) -> tuple[Listener, list[Recorder], int]:
    accepted: list[Recorder] = []

    def factory() -> Recorder:
        accepted.append(make())
        return accepted[-1]

    listener = await listen(factory, "127.0.0.1", 0)
    return listener, accepted, listener.sockets[0].getsockname()[1]


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_bytes_both_ways_then_close_in_order(run: Callable[[Body], None]) -> None:
    async def body() -> None:
        listener, accepted, port = await _serve(Echo)
        transport, client = await connect(Recorder, "127.0.0.1", port)
        assert isinstance(client, Recorder) and client.events == ["made"]
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        payload = bytes(range(256)) * 1000
        for start in range(0, len(payload), 7000):
            transport.write(payload[start : start + 7000])
        assert await client.received(len(payload)) == payload
        client.close()
        assert "lost" not in client.events  # never from inside close()
        await asyncio.wait_for(client.lost.wait(), 5)
        await asyncio.wait_for(accepted[0].lost.wait(), 5)
        assert client.events == ["made", "lost"]
        assert accepted[0].events == ["made", "eof", "lost"]
        transport.write(b"after close")  # goes nowhere, raises nothing
        listener.close()
        await asyncio.sleep(0)
        assert asyncio.get_running_loop() not in net._reactors  # the last one out closed it

    run(body)


def test_a_full_socket_pauses_the_writer_and_close_sends_the_queue(
    run: Callable[[Body], None],
) -> None:
    async def body() -> None:
        listener, accepted, port = await _serve(Recorder)
        transport, client = await connect(Recorder, "127.0.0.1", port)
        await _until(lambda: bool(accepted))
        server = accepted[0]
        assert server.transport is not None
        server.transport.pause_reading()
        transport.set_write_buffer_limits(high=64 * 1024)
        chunk = b"x" * 65536
        total = 0
        while "pause_writing" not in client.events:
            transport.write(chunk + total.to_bytes(8, "big"))
            total += 1
            assert total < 10_000, "the socket never filled"
        assert transport.get_write_buffer_size() > 64 * 1024
        await asyncio.sleep(0.05)
        assert not server.data  # paused: nothing delivered
        client.close()  # with bytes still queued: they go first
        server.transport.resume_reading()
        data = await server.received(total * (65536 + 8))
        for i in range(total):
            record = data[i * 65544 : (i + 1) * 65544]
            assert record[-8:] == i.to_bytes(8, "big") and record[:65536] == chunk
        await asyncio.wait_for(server.lost.wait(), 5)
        await asyncio.wait_for(client.lost.wait(), 5)
        assert client.events == ["made", "pause_writing", "resume_writing", "lost"]
        listener.close()

    run(body)


def test_abort_drops_the_queue_and_the_peer_sees_the_end(run: Callable[[Body], None]) -> None:
    async def body() -> None:
        listener, accepted, port = await _serve(Recorder)
        transport, client = await connect(Recorder, "127.0.0.1", port)
        await _until(lambda: bool(accepted))
        accepted[0].transport.pause_reading()  # type: ignore[union-attr]
        while transport.get_write_buffer_size() == 0:
            transport.write(b"y" * 65536)
        transport.abort()
        assert transport.is_closing() and transport.get_write_buffer_size() == 0
        await asyncio.wait_for(client.lost.wait(), 5)
        accepted[0].transport.resume_reading()  # type: ignore[union-attr]
        await asyncio.wait_for(accepted[0].lost.wait(), 5)
        listener.close()

    run(body)


def test_a_client_that_left_is_gone_before_the_next_is_taken(
    run: Callable[[Body], None],
) -> None:
    async def body() -> None:
        log: list[str] = []
        names = iter("ABC")
        listener, _, port = await _serve(lambda: Recorder(next(names), log))
        first = socket.create_connection(("127.0.0.1", port))
        await _until(lambda: log == ["made A"])
        # Both happen while the loop is not running: it sees them in one batch, in order.
        first.close()
        second = socket.create_connection(("127.0.0.1", port))
        await _until(lambda: len(log) == 3)
        assert log == ["made A", "lost A", "made B"]
        second.close()
        await _until(lambda: len(log) == 4)
        listener.close()

    run(body)


def test_connection_refused_is_raised_and_leaves_nothing_behind(
    run: Callable[[Body], None],
) -> None:
    async def body() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # nothing listens there
        with pytest.raises(ConnectionRefusedError):
            await connect(Recorder, "127.0.0.1", port)
        assert asyncio.get_running_loop() not in net._reactors

    run(body)


def _contexts(tmp: Path, trusted: bool = True) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = make_ca("net test CA")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    crt = issue(ca, "localhost", ["localhost"]).write(tmp, "server")
    server.load_cert_chain(crt, tmp / "server.key")
    client = ssl.create_default_context()
    if trusted:
        client.load_verify_locations(cadata=ca.cert.public_bytes(_pem()).decode())
    return server, client


def _pem() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM


class TlsOnAsk(Echo):
    """Answers b"S" to b"?" and starts TLS, as a PostgreSQL server does to SSLRequest;
    echoes everything after."""

    ctx: ssl.SSLContext
    failed: list[BaseException] = []

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if data == b"?" and self.transport.tls is None:
            self.transport.write(b"S")
            asyncio.get_running_loop().create_task(self._secure())
            return
        super().data_received(data)

    async def _secure(self) -> None:
        assert self.transport is not None
        try:
            await self.transport.start_tls(self.ctx, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.failed.append(exc)


def test_tls_started_on_an_open_connection(run: Callable[[Body], None], tmp_path: Path) -> None:
    server_ctx, client_ctx = _contexts(tmp_path)

    async def body() -> None:
        TlsOnAsk.ctx = server_ctx
        listener, accepted, port = await _serve(TlsOnAsk)
        transport, client = await connect(Recorder, "127.0.0.1", port)
        transport.write(b"?")
        assert await client.received(1) == b"S"
        client.data.clear()
        await transport.start_tls(client_ctx, server_side=False, server_hostname="localhost")
        assert transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        assert not transport.can_write_eof()
        payload = b"secret " * 50_000
        transport.write(payload)
        assert await client.received(len(payload)) == payload
        client.close()
        await asyncio.wait_for(accepted[0].lost.wait(), 5)
        assert accepted[0].events[-2:] == ["eof", "lost"]  # close_notify, then the end
        listener.close()

    run(body)


def test_a_failed_tls_handshake_raises_and_closes(
    run: Callable[[Body], None], tmp_path: Path
) -> None:
    server_ctx, untrusting = _contexts(tmp_path, trusted=False)

    async def body() -> None:
        TlsOnAsk.ctx = server_ctx
        TlsOnAsk.failed = []
        listener, accepted, port = await _serve(TlsOnAsk)
        transport, client = await connect(Recorder, "127.0.0.1", port)
        transport.write(b"?")
        assert await client.received(1) == b"S"
        with pytest.raises(ssl.SSLCertVerificationError):
            await transport.start_tls(untrusting, server_side=False, server_hostname="localhost")
        await asyncio.wait_for(client.lost.wait(), 5)
        await asyncio.wait_for(accepted[0].lost.wait(), 5)
        assert TlsOnAsk.failed and isinstance(TlsOnAsk.failed[0], (ssl.SSLError, OSError))
        listener.close()

    run(body)


def _socket_calls() -> list[Any]:
    """The standard library's calls, and the C module's where this build has it."""
    from sluice.net import sockio

    found: list[Any] = [sockio]  # (the C functions in the compiled build)
    for name in ("recv", "send", "poll"):
        source = getattr(sockio, name).__module__
        assert source in ("sluice.net.sockio", "sluice.net._sockio", None), source
    try:
        from sluice.net import _sockio
    except ImportError:
        return found
    return [*found, _sockio]


@pytest.mark.parametrize("calls", _socket_calls(), ids=lambda m: m.__name__)
def test_socket_calls_agree(calls: Any) -> None:
    import select

    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    epoll = select.epoll()
    try:
        assert calls.recv(left.fileno()) is None  # nothing waits
        assert calls.poll(epoll) == []
        epoll.register(left.fileno(), select.EPOLLIN)
        assert calls.send(right.fileno(), b"hello") == 5
        assert calls.poll(epoll) == [left.fileno(), select.EPOLLIN]
        assert calls.recv(left.fileno()) == b"hello"
        assert calls.send(right.fileno(), bytearray(b"ab")) == 2  # any bytes-like
        assert calls.recv(left.fileno()) == b"ab"
        sent = 0
        while (took := calls.send(right.fileno(), b"z" * 65536)) > 0:
            sent += took
        assert took == 0 and sent > 0  # full: 0, not an exception
        received = 0
        while (data := calls.recv(left.fileno())) is not None:
            received += len(data)
        assert received == sent
        right.close()
        assert calls.recv(left.fileno()) == b""  # the end
        with pytest.raises(BrokenPipeError):
            calls.send(left.fileno(), b"x")
        with pytest.raises(OSError):
            calls.recv(-1)
    finally:
        epoll.close()
        left.close()
        right.close()


class Failing(Echo):
    """Fails on b"boom" (a protocol's bug), echoes the rest."""

    def data_received(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("a bug")
        super().data_received(data)


def test_a_protocol_that_fails_loses_its_connection_only(
    run: Callable[[Body], None], caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        listener, _, port = await _serve(Failing)
        first, one = await connect(Recorder, "127.0.0.1", port)
        second, other = await connect(Recorder, "127.0.0.1", port)
        first.write(b"boom")
        await asyncio.wait_for(one.lost.wait(), 5)  # that client is let go
        second.write(b"still here")
        assert await other.received(10) == b"still here"
        third, new = await connect(Recorder, "127.0.0.1", port)  # and the listener goes on
        third.write(b"hi")
        assert await new.received(2) == b"hi"
        for transport in (second, third):
            transport.close()
        listener.close()
        await asyncio.sleep(0.05)

    run(body)
    assert "its protocol failed" in caplog.text


def test_a_peer_that_never_reads_cannot_keep_a_closed_connection(
    run: Callable[[Body], None],
) -> None:
    async def body() -> None:
        listener, accepted, port = await _serve(Recorder)
        net.reactor_of(asyncio.get_running_loop()).drain_timeout = 0.3
        peer = socket.create_connection(("127.0.0.1", port))  # never reads
        await _until(lambda: bool(accepted))
        server = accepted[0]
        assert server.transport is not None
        while server.transport.get_write_buffer_size() == 0:
            server.transport.write(b"q" * 65536)
        server.close()  # with bytes queued that the peer will not take
        await asyncio.sleep(0.1)
        assert not server.lost.is_set()  # still trying
        await asyncio.wait_for(server.lost.wait(), 5)  # then dropped
        peer.close()
        listener.close()

    run(body)


def test_what_one_pass_reads_is_stamped_with_the_time_the_pass_began(
    run: Callable[[Body], None],
) -> None:
    """`clock.now()` inside a pass is the pass's start, the same for every socket of it and
    not before the bytes arrived; outside a pass it is the clock."""

    class Stamping(Recorder):
        def data_received(self, data: bytes) -> None:
            stamps.append(clock.now())
            super().data_received(data)

    async def body() -> None:
        listener, accepted, port = await _serve(Stamping)
        pairs = [await connect(Recorder, "127.0.0.1", port) for _ in range(3)]
        await _until(lambda: len(accepted) == 3)
        sent_at = clock.now()
        for transport, _ in pairs:
            transport.write(b"x")
        await asyncio.sleep(0.05)  # all three are ready by the next pass
        assert len(stamps) == 3 and len(set(stamps)) == 1 and stamps[0] >= sent_at
        outside = clock.now()
        time.sleep(0.01)
        assert clock.now() >= outside + 0.01 and not clock.CLOCK.in_pass
        for transport, _ in pairs:
            transport.close()
        listener.close()

    stamps: list[float] = []
    run(body)
