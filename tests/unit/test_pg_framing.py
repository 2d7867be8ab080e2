"""MessageReader on exact bytes: whole messages out, whatever the chunking.

Every stream is fed split at every possible offset (and byte by byte); the
messages that come out must be the same. Lengths outside the bounds must be
rejected as soon as the header is in, before the body is buffered.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from sluice.errors import ProtocolError
from sluice.wire.pg import messages as m
from sluice.wire.pg.framing import MessageReader

MAX = 1024

PARSE = m.parse(b"s1", b"SELECT $1\x00\x00\x01\x00\x00\x00\x17")
BIND = b"B\x00\x00\x00\x13\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"
DESCRIBE = b"D\x00\x00\x00\x06P\x00"
EXECUTE = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"
FLUSH = b"H\x00\x00\x00\x04"

SEQUENCES: list[list[bytes]] = [
    [m.query("SELECT 1")],
    [m.SYNC],
    [m.TERMINATE],
    [PARSE, BIND, DESCRIBE, EXECUTE, m.SYNC],
    [m.query(""), FLUSH, m.query("x" * 200), m.SYNC],
    [m.message(b"d", b"\x00" * (MAX - 4))],  # the length field at exactly the maximum
]


def _drain(reader: MessageReader) -> list[bytes]:
    out = []
    while (msg := reader.next()) is not None:
        out.append(msg)
    return out


@pytest.mark.parametrize("messages", SEQUENCES)
def test_every_split_gives_same_messages(messages: list[bytes]) -> None:
    stream = b"".join(messages)
    for cut in range(len(stream) + 1):
        reader = MessageReader(MAX)
        reader.feed(stream[:cut])
        got = _drain(reader)
        reader.feed(stream[cut:])
        got += _drain(reader)
        assert got == messages, cut
        assert reader.pending == 0


@pytest.mark.parametrize("messages", SEQUENCES)
def test_byte_by_byte(messages: list[bytes]) -> None:
    stream = b"".join(messages)
    reader = MessageReader(MAX)
    got: list[bytes] = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        got += _drain(reader)
        assert reader.pending == (i + 1) - sum(len(g) for g in got)
    assert got == messages


def test_two_way_splits_of_a_sequence() -> None:
    messages = [PARSE, BIND, EXECUTE, m.SYNC]
    stream = b"".join(messages)
    for a in range(len(stream) + 1):
        for b in range(a, len(stream) + 1):
            reader = MessageReader(MAX)
            got: list[bytes] = []
            for chunk in (stream[:a], stream[a:b], stream[b:]):
                reader.feed(chunk)
                got += _drain(reader)
            assert got == messages, (a, b)


def test_incomplete_is_none_and_nothing_lost() -> None:
    reader = MessageReader(MAX)
    assert reader.next() is None
    reader.feed(b"Q\x00\x00")
    assert reader.next() is None
    assert reader.pending == 3
    reader.feed(b"\x00\x0dSELECT 1\x00Q")
    assert reader.next() == m.query("SELECT 1")
    assert reader.next() is None
    assert reader.pending == 1


BAD_LENGTHS: list[tuple[bytes, str]] = [
    (b"Q\x00\x00\x00\x00", "invalid message length 0 for type 'Q'"),
    (b"Q\x00\x00\x00\x03", "invalid message length 3 for type 'Q'"),
    (b"P\xff\xff\xff\xff", "invalid message length 4294967295 for type 'P'"),
    (b"d" + struct.pack("!I", MAX + 1), f"invalid message length {MAX + 1} for type 'd'"),
]


@pytest.mark.parametrize(("header", "message"), BAD_LENGTHS)
def test_bad_length_rejected_on_header(header: bytes, message: str) -> None:
    reader = MessageReader(MAX)
    reader.feed(header)  # only the header: the body is never waited for
    with pytest.raises(ProtocolError, match=message):
        reader.next()


def test_bad_length_after_good_messages() -> None:
    reader = MessageReader(MAX)
    reader.feed(m.SYNC + b"X\x00\x00\x00\x02")
    assert reader.next() == m.SYNC
    with pytest.raises(ProtocolError):
        reader.next()


def test_max_size_bounds_the_length_field() -> None:
    reader = MessageReader(MAX)
    reader.feed(b"d" + struct.pack("!I", MAX))
    assert reader.next() is None  # allowed: waits for the body
    reader.feed(b"\x00" * (MAX - 4))
    assert reader.next() == b"d" + struct.pack("!I", MAX) + b"\x00" * (MAX - 4)


def test_buffer_does_not_keep_consumed_bytes() -> None:
    """A long stream whose chunks never end on a message boundary stays in bounded memory."""
    msg = m.message(b"d", b"x" * 1000)
    chunk = msg[1:] + msg[:1]  # every chunk ends one byte into the next message
    reader = MessageReader(4096)
    tracemalloc.start()
    try:
        count = 0
        reader.feed(msg[:1])
        for _ in range(2000):  # ~2 MB in all
            reader.feed(chunk)
            while (got := reader.next()) is not None:
                assert got == msg
                count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 2000
    assert peak < 256 * 1024, peak


# ---- startup packets -------------------------------------------------------------------------

STARTUP = m.startup_message({"user": "app", "database": "appdb"})


def test_startup_every_split() -> None:
    stream = m.ssl_request() + STARTUP
    for cut in range(len(stream) + 1):
        reader = MessageReader(MAX)
        got: list[bytes] = []
        for chunk in (stream[:cut], stream[cut:]):
            reader.feed(chunk)
            while (packet := reader.next_startup()) is not None:
                got.append(packet)
        assert got == [m.ssl_request(), STARTUP], cut


def test_startup_then_regular_messages() -> None:
    reader = MessageReader(MAX)
    reader.feed(STARTUP + m.password_message(b"pw\x00") + m.query("SELECT 1"))
    assert reader.next_startup() == STARTUP
    assert reader.next() == m.password_message(b"pw\x00")
    assert reader.next() == m.query("SELECT 1")


@pytest.mark.parametrize("length", [0, 4, 7, 10001, 0xFFFFFFFF])
def test_startup_length_bounds_rejected(length: int) -> None:
    reader = MessageReader(MAX)
    reader.feed(struct.pack("!I", length))
    with pytest.raises(ProtocolError, match=f"invalid startup packet length {length}"):
        reader.next_startup()


@pytest.mark.parametrize("length", [8, 10000])
def test_startup_length_bounds_accepted(length: int) -> None:
    packet = struct.pack("!II", length, m.PROTOCOL_3_0) + b"\x00" * (length - 8)
    reader = MessageReader(MAX)
    reader.feed(packet[:-1])
    assert reader.next_startup() is None
    reader.feed(packet[-1:])
    assert reader.next_startup() == packet


def test_startup_partial_length() -> None:
    reader = MessageReader(MAX)
    reader.feed(b"\x00\x00\x00")
    assert reader.next_startup() is None
    assert reader.pending == 3


# ---- take_rest -------------------------------------------------------------------------------


def test_take_rest_returns_unread_bytes() -> None:
    reader = MessageReader(MAX)
    reader.feed(m.ssl_request() + b"\x16\x03\x01garbage")
    assert reader.next_startup() == m.ssl_request()
    assert reader.take_rest() == b"\x16\x03\x01garbage"
    assert reader.pending == 0
    assert reader.take_rest() == b""
    reader.feed(m.SYNC)
    assert reader.next() == m.SYNC


def test_take_rest_includes_partial_message() -> None:
    reader = MessageReader(MAX)
    reader.feed(m.SYNC + b"Q\x00\x00")
    assert reader.next() == m.SYNC
    assert reader.take_rest() == b"Q\x00\x00"
    assert reader.next() is None


def test_take_rest_empty_reader() -> None:
    assert MessageReader(MAX).take_rest() == b""
