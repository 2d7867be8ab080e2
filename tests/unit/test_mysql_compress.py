"""The compressed protocol's framing on exact bytes."""

from __future__ import annotations

import os
import zlib

import pytest

from sluice.errors import ProtocolError
from sluice.wire.mysql.compress import MAX_CHUNK, CompressedStream
from sluice.wire.mysql.packets import frame


def compressed(payload: bytes, seq: int, *, raw: bool = False) -> bytes:
    """One compressed packet as a client sends it."""
    body, size = (payload, 0) if raw else (zlib.compress(payload), len(payload))
    return len(body).to_bytes(3, "little") + bytes((seq,)) + size.to_bytes(3, "little") + body


def test_unwrap_compressed_and_raw_in_any_pieces() -> None:
    query = frame(b"\x03select '" + b"x" * 200 + b"'", 0)
    ping = frame(b"\x0e", 0)
    stream = compressed(query, 0) + compressed(ping, 0, raw=True)
    for cut in range(len(stream) + 1):
        zipped = CompressedStream()
        assert zipped.unwrap(stream[:cut]) + zipped.unwrap(stream[cut:]) == query + ping


def test_wrap_numbers_replies_after_the_clients_packet() -> None:
    zipped = CompressedStream()
    zipped.unwrap(compressed(frame(b"\x0e", 0), 0, raw=True))
    small = frame(b"\x00\x00\x00\x02\x00\x00\x00", 1)  # an OK: too small to compress
    big = frame(b"\x00" + b"y" * 1000, 1)
    out = zipped.wrap(small) + zipped.wrap(big)
    assert out[:7] == len(small).to_bytes(3, "little") + b"\x01" + b"\x00\x00\x00"
    assert out[7 : 7 + len(small)] == small
    rest = out[7 + len(small) :]
    assert rest[3] == 2 and int.from_bytes(rest[4:7], "little") == len(big)
    assert zlib.decompress(rest[7:]) == big
    zipped.unwrap(compressed(frame(b"\x0e", 0), 0, raw=True))  # the next command: 0 again
    assert zipped.wrap(small)[3] == 1


def test_incompressible_data_goes_as_it_is() -> None:
    noise = frame(os.urandom(5000), 1)
    out = CompressedStream().wrap(noise)
    assert out[4:7] == b"\x00\x00\x00" and out[7:] == noise


def test_more_than_one_compressed_packet_can_carry() -> None:
    data = frame(b"z" * (MAX_CHUNK + 100), 1)  # two ordinary packets, then the rest
    out = CompressedStream().wrap(data)
    first = int.from_bytes(out[0:3], "little")
    assert int.from_bytes(out[4:7], "little") == MAX_CHUNK
    second = out[7 + first :]
    assert second[3] == 1
    client_side = CompressedStream()
    assert client_side.unwrap(out) == data


@pytest.mark.parametrize(
    "packet",
    [
        b"\x05\x00\x00\x00\x10\x00\x00" + b"not z",  # not a zlib stream
        compressed(b"x" * 100, 0)[:4] + (99).to_bytes(3, "little") + compressed(b"x" * 100, 0)[7:],
        compressed(b"x" * 100, 0)[:4] + (101).to_bytes(3, "little") + compressed(b"x" * 100, 0)[7:],
        compressed(b"\x00" * 10_000_000, 0)[:4] + b"\x10\x00\x00" + zlib.compress(b"\x00" * 10**7),
    ],
    ids=["garbage", "longer than stated", "shorter than stated", "bomb"],
)
def test_malformed_packets_are_refused(packet: bytes) -> None:
    body = packet[7:]
    packet = len(body).to_bytes(3, "little") + packet[3:7] + body
    with pytest.raises(ProtocolError):
        CompressedStream().unwrap(packet)
