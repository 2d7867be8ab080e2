"""The guarded front of a DB instance: refusals as exact bytes, and the relay on loopback.

`Refusal` is fed exact bytes (every split of a PostgreSQL startup exchange);
`InstanceGuard` runs on real loopback sockets, under uvloop as in `sluice
server`, in front of a small asyncio server that records what it received and
from which address.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from sluice.control.guard import InstanceGuard, Refusal
from sluice.dbserver.launcher import free_port
from sluice.wire.pg import messages as pm

_SSL = struct.pack("!II", 8, 80877103)


def test_mysql_refusal_is_an_err_1130_in_place_of_the_greeting() -> None:
    text = b"Host '127.20.0.9' is not allowed to connect to this MariaDB server"
    payload = b"\xff\x6a\x04" + text
    expected = len(payload).to_bytes(3, "little") + b"\x00" + payload
    refusal = Refusal("mysql", "127.20.0.9", "host", 3306)
    assert refusal.first() == expected
    assert refusal.feed(b"anything") == (b"", True)


def test_mysql_busy_is_err_1040() -> None:
    first = Refusal("mariadb", "127.0.0.1", "busy", 3306).first()
    assert first[4:7] == b"\xff\x10\x04" and first.endswith(b"Too many connections")


def test_postgres_refusal_waits_for_the_startup_packet_at_every_split() -> None:
    startup = pm.startup_message({"user": "app", "database": "shop"})
    stream = _SSL + startup
    expected = pm.error_response(
        "28000",
        'no pg_hba.conf entry for host "127.20.0.9", user "app", database "shop", '
        "no encryption",
        "FATAL",
        "No security group rule of the DB instance admits connections from 127.20.0.9 "
        "on port 5432.",
    )
    for cut in range(1, len(stream)):
        refusal = Refusal("postgres", "127.20.0.9", "host", 5432)
        assert refusal.first() == b""
        sent, done = b"", False
        for part in (stream[:cut], stream[cut:]):
            reply, done = refusal.feed(part)
            sent += reply
            if done:
                break
        assert (sent, done) == (b"N" + expected, True), cut


def test_postgres_refusal_of_a_cancel_or_garbage_just_closes() -> None:
    cancel = struct.pack("!IIII", 16, 80877102, 1, 2)
    assert Refusal("postgres", "127.0.0.1", "host", 5432).feed(cancel) == (b"", True)
    garbage = struct.pack("!I", 3) + b"xxxx"
    assert Refusal("postgres", "127.0.0.1", "host", 5432).feed(garbage) == (b"", True)


# ---- on loopback ----

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _with_guard(handler: Handler, admitted: set[str], body: Callable[[int], Awaitable[None]],
                      engine: str = "mysql") -> None:  # fmt: skip
    backend = await asyncio.start_server(handler, "127.0.0.1", 0)
    backend_port = backend.sockets[0].getsockname()[1]
    port = free_port("127.0.0.1")
    guard = InstanceGuard("db", engine, ("127.0.0.1", port), ("127.0.0.1", backend_port),
                          lambda address: address in admitted)  # fmt: skip
    await guard.start()
    try:
        await body(port)
    finally:
        await guard.stop()
        backend.close()


async def _open_from(address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


def test_an_admitted_client_is_relayed_from_its_own_address_with_half_close() -> None:
    seen: list[str] = []
    size = 4 << 20

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername")[0])
        data = await reader.read()  # until the client's half-close
        writer.write(len(data).to_bytes(8, "big") + data[::-1])
        await writer.drain()
        writer.close()

    async def body(port: int) -> None:
        reader, writer = await _open_from("127.0.0.5", port)
        payload = bytes(range(256)) * (size // 256)
        writer.write(payload)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        assert answer[:8] == size.to_bytes(8, "big") and answer[8:] == payload[::-1]

    uvloop.run(_with_guard(backend, {"127.0.0.5"}, body))
    assert seen == ["127.0.0.5"]


def test_a_slow_reader_holds_back_the_server_instead_of_filling_memory() -> None:
    written: list[int] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.set_write_buffer_limits(high=64 * 1024)
        chunk = b"x" * 65536
        try:
            for _ in range(2000):  # 128 MB, far more than any buffer on the way
                writer.write(chunk)
                await writer.drain()
                written.append(len(chunk))
        except (ConnectionError, OSError):
            pass

    async def body(port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        try:
            await asyncio.sleep(1.0)  # the client reads nothing meanwhile
            stalled = sum(written)
            await asyncio.sleep(0.5)
            assert sum(written) == stalled  # the server is held back
            assert stalled < 16 << 20
        finally:
            sock.close()

    uvloop.run(_with_guard(backend, {"127.0.0.1"}, body))


def test_a_client_no_rule_admits_never_reaches_the_server() -> None:
    reached: list[str] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(writer.get_extra_info("peername")[0])
        writer.close()

    async def body(port: int) -> None:
        reader, writer = await _open_from("127.0.0.6", port)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer[4:7] == b"\xff\x6a\x04" and b"'127.0.0.6'" in answer

    uvloop.run(_with_guard(backend, {"127.0.0.5"}, body))
    assert reached == []


@pytest.mark.parametrize("engine", ["postgres"])
def test_a_refused_postgres_client_is_told_after_its_startup_packet(engine: str) -> None:
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def body(port: int) -> None:
        reader, writer = await _open_from("127.0.0.6", port)
        writer.write(_SSL)
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"N"
        writer.write(pm.startup_message({"user": "u", "database": "d"}))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        fields = pm.parse_error_fields(answer[5:])
        assert (fields["S"], fields["C"]) == ("FATAL", "28000")

    uvloop.run(_with_guard(backend, set(), body, engine))
