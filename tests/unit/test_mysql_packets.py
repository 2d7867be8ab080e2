"""MySQL packet framing and basic encodings on exact bytes.

PacketReader is fed every stream split at every offset (and byte by byte):
the logical packets that come out must not depend on the chunking. Payloads
of 16 MiB and more cross the 0xFFFFFF boundary and must come back whole; a
header that announces more than the maximum is refused before its body is
buffered.
"""

from __future__ import annotations

import pytest

from mysql_captures import ERROR_REPLY, GREETING, MULTI_REPLY, SELECT_REPLY
from sluice.errors import ProtocolError
from sluice.wire.mysql import packets as p
from sluice.wire.mysql.packets import MAX_CHUNK, PacketReader

MAX = 1024


def _drain(reader: PacketReader) -> list[tuple[int, bytes]]:
    out = []
    while (got := reader.next()) is not None:
        out.append(got)
    return out


def _split(stream: bytes) -> list[tuple[int, bytes]]:
    """The packets of a stream of small packets, read by hand."""
    out, pos = [], 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos : pos + 3], "little")
        out.append((stream[pos + 3], stream[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


FRAMES: list[tuple[bytes, int, bytes]] = [
    (b"", 0, b"\x00\x00\x00\x00"),
    (b"\x0e", 0, b"\x01\x00\x00\x00\x0e"),  # COM_PING
    (b"\x03SELECT 1", 0, b"\x09\x00\x00\x00\x03SELECT 1"),
    (b"\x00\x00\x00\x02\x00\x00\x00", 2, b"\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00"),
    (b"x" * 300, 255, b"\x2c\x01\x00\xff" + b"x" * 300),
    (b"y" * 0x10203, 7, b"\x03\x02\x01\x07" + b"y" * 0x10203),
]


@pytest.mark.parametrize(("payload", "seq", "wire"), FRAMES)
def test_frame(payload: bytes, seq: int, wire: bytes) -> None:
    assert p.frame(payload, seq) == wire
    reader = PacketReader(1 << 20)
    reader.feed(wire)
    assert reader.next() == (seq, payload)
    assert reader.next() is None


STREAMS: list[bytes] = [
    GREETING,
    SELECT_REPLY,
    MULTI_REPLY,
    ERROR_REPLY,
    SELECT_REPLY + ERROR_REPLY,
    p.frame(b"", 0) + p.frame(b"\x01", 1) + p.frame(b"\x00" * (MAX - 1), 2),
    p.frame(b"z" * MAX, 9),  # the payload at exactly the maximum
]


@pytest.mark.parametrize("stream", STREAMS)
def test_every_split_gives_same_packets(stream: bytes) -> None:
    expected = _split(stream)
    for cut in range(len(stream) + 1):
        reader = PacketReader(MAX)
        reader.feed(stream[:cut])
        got = _drain(reader)
        reader.feed(stream[cut:])
        got += _drain(reader)
        assert got == expected, cut
        assert reader.pending == 0


@pytest.mark.parametrize("stream", STREAMS)
def test_byte_by_byte(stream: bytes) -> None:
    reader = PacketReader(MAX)
    got: list[tuple[int, bytes]] = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        got += _drain(reader)
        assert reader.pending == i + 1 - sum(4 + len(payload) for _, payload in got)
    assert got == _split(stream)


def test_two_way_splits() -> None:
    expected = _split(MULTI_REPLY)[:3] + _split(ERROR_REPLY)  # a result set cut short by ERR
    stream = b"".join(p.frame(payload, seq) for seq, payload in expected)
    for a in range(len(stream) + 1):
        for b in range(a, len(stream) + 1):
            reader = PacketReader(MAX)
            got: list[tuple[int, bytes]] = []
            for chunk in (stream[:a], stream[a:b], stream[b:]):
                reader.feed(chunk)
                got += _drain(reader)
            assert got == expected, (a, b)


# ---- continuation packets ----------------------------------------------------


def _headers(wire: bytes) -> list[tuple[int, int]]:
    """(length, seq) of each physical packet in `wire`."""
    out, pos = [], 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "little")
        out.append((length, wire[pos + 3]))
        pos += 4 + length
    return out


@pytest.mark.parametrize(
    ("size", "headers"),
    [
        (MAX_CHUNK - 1, [(MAX_CHUNK - 1, 3)]),
        (MAX_CHUNK, [(MAX_CHUNK, 3), (0, 4)]),  # an exact multiple ends with an empty packet
        (MAX_CHUNK + 10, [(MAX_CHUNK, 3), (10, 4)]),
        (2 * MAX_CHUNK, [(MAX_CHUNK, 3), (MAX_CHUNK, 4), (0, 5)]),
    ],
)
def test_large_payload_round_trip(size: int, headers: list[tuple[int, int]]) -> None:
    payload = bytes(range(256)) * (size // 256) + b"\xab" * (size % 256)
    wire = p.frame(payload, 3)
    assert _headers(wire) == headers
    assert p.seq_after(3, size) == (3 + len(headers)) & 0xFF
    reader = PacketReader(2 * MAX_CHUNK)
    got: list[tuple[int, bytes]] = []
    # in uneven chunks, the cuts falling inside a header and inside bodies
    for a, b in ((0, MAX_CHUNK + 2), (MAX_CHUNK + 2, MAX_CHUNK + 6), (MAX_CHUNK + 6, len(wire))):
        reader.feed(wire[a:b])
        got += _drain(reader)
    assert len(got) == 1
    assert got[0][0] == 3
    assert got[0][1] == payload
    assert reader.pending == 0


def test_continuation_then_small_packet_and_sequence_wrap() -> None:
    payload = b"q" * (MAX_CHUNK + 1)
    wire = p.frame(payload, 255) + p.frame(b"\x0e", 0)
    assert _headers(wire) == [(MAX_CHUNK, 255), (1, 0), (1, 0)]
    reader = PacketReader(MAX_CHUNK + 1)
    reader.feed(wire)
    assert reader.next() == (255, payload)
    assert reader.next() == (0, b"\x0e")


def test_continuation_out_of_order_is_refused() -> None:
    wire = p.header(MAX_CHUNK, 1) + bytes(MAX_CHUNK) + p.header(3, 5) + b"abc"
    reader = PacketReader(2 * MAX_CHUNK)
    reader.feed(wire)
    with pytest.raises(ProtocolError, match="out of order"):
        reader.next()


# ---- oversized and malformed input -------------------------------------------


def test_oversized_header_refused_before_body() -> None:
    reader = PacketReader(MAX)
    reader.feed(p.header(MAX + 1, 0))  # no body at all: the header alone is enough
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.next()


def test_oversized_continuation_refused_at_second_header() -> None:
    reader = PacketReader(MAX_CHUNK + 5)
    reader.feed(p.header(MAX_CHUNK, 0) + bytes(MAX_CHUNK))
    assert reader.next() is None
    assert reader.pending == MAX_CHUNK
    reader.feed(p.header(6, 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.next()


def test_small_maximum_refuses_a_full_chunk() -> None:
    reader = PacketReader(1 << 20)
    reader.feed(b"\xff\xff\xff\x00")
    with pytest.raises(ProtocolError):
        reader.next()


def test_partial_header_waits() -> None:
    reader = PacketReader(MAX)
    reader.feed(b"\x05\x00\x00")
    assert reader.next() is None
    reader.feed(b"\x00hell")
    assert reader.next() is None
    reader.feed(b"o")
    assert reader.next() == (0, b"hello")


def test_take_rest() -> None:
    reader = PacketReader(MAX)
    reader.feed(p.frame(b"\x01", 1) + b"\x16\x03\x01")  # a packet, then a TLS hello begins
    assert reader.next() == (1, b"\x01")
    assert reader.take_rest() == b"\x16\x03\x01"
    assert reader.pending == 0


def test_take_rest_inside_continuation_refused() -> None:
    reader = PacketReader(2 * MAX_CHUNK)
    reader.feed(p.header(MAX_CHUNK, 0) + bytes(MAX_CHUNK))
    assert reader.next() is None
    with pytest.raises(ProtocolError):
        reader.take_rest()


# ---- renumbering ---------------------------------------------------------------


def test_renumber() -> None:
    stream = p.frame(b"\x01", 7) + p.frame(b"", 9) + p.frame(b"abc", 0)
    out, nxt = p.renumber(stream, 254)
    assert out == b"\x01\x00\x00\xfe\x01" + b"\x00\x00\x00\xff" + b"\x03\x00\x00\x00abc"
    assert nxt == 1
    assert p.renumber(b"", 5) == (b"", 5)


@pytest.mark.parametrize("bad", [b"\x01\x00", b"\x05\x00\x00\x01abc"])
def test_renumber_partial_refused(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.renumber(bad, 0)


# ---- length-encoded integers and strings ---------------------------------------

LENENC: list[tuple[int, bytes]] = [
    (0, b"\x00"),
    (250, b"\xfa"),
    (251, b"\xfc\xfb\x00"),
    (0xFFFF, b"\xfc\xff\xff"),
    (0x10000, b"\xfd\x00\x00\x01"),
    (0xFFFFFF, b"\xfd\xff\xff\xff"),
    (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
    (2**64 - 1, b"\xfe" + b"\xff" * 8),
]


@pytest.mark.parametrize(("value", "wire"), LENENC)
def test_lenenc_int(value: int, wire: bytes) -> None:
    assert p.lenenc_int(value) == wire
    assert p.read_lenenc_int(b"#" + wire + b"!", 1) == (value, 1 + len(wire))


@pytest.mark.parametrize(
    "bad", [b"", b"\xfb", b"\xff", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe\x01\x02\x03"]
)
def test_lenenc_int_malformed(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.read_lenenc_int(bad, 0)


def test_lenenc_and_nul_strings() -> None:
    assert p.lenenc_str(b"def") == b"\x03def"
    assert p.lenenc_str(b"") == b"\x00"
    assert p.lenenc_str(b"a" * 300)[:3] == b"\xfc\x2c\x01"
    assert p.read_lenenc_str(b"\x03defx", 0) == (b"def", 4)
    assert p.nul_str("root") == b"root\x00"
    assert p.nul_str(b"") == b"\x00"
    assert p.read_nul_str(b"root\x00rest", 0) == (b"root", 5)
    with pytest.raises(ProtocolError):
        p.read_lenenc_str(b"\x05abc", 0)
    with pytest.raises(ProtocolError):
        p.read_nul_str(b"root", 0)
    with pytest.raises(ValueError):
        p.nul_str("a\x00b")


def test_fixed_integers() -> None:
    assert p.u16(0x1234) == b"\x34\x12"
    assert p.u32(0x12345678) == b"\x78\x56\x34\x12"
    assert p.read_u16(b"\x00\x34\x12", 1) == 0x1234
    assert p.read_u32(b"\x78\x56\x34\x12", 0) == 0x12345678
    with pytest.raises(ProtocolError):
        p.read_u16(b"\x01", 0)
    with pytest.raises(ProtocolError):
        p.read_u32(b"\x01\x02\x03", 0)
