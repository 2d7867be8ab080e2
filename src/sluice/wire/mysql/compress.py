"""The compressed protocol (CLIENT_COMPRESS, zlib) on the server's side, free of I/O.

Once the login's final OK has gone out, a client that asked for CLIENT_COMPRESS
wraps its stream of ordinary packets in compressed packets, and expects the
same back: a 7-byte header (3-byte little-endian length of what follows, a
1-byte sequence id, the 3-byte length before compression, 0 when what follows
is not compressed), then a zlib stream or the bytes as they are. A compressed
packet may hold several ordinary packets, or part of one. Its sequence ids
count on their own: the client starts each command at 0 and the server's
replies go on from the client's last one, as each command's ordinary packets do.

Only the client side is compressed: Sluice's connections to the server are not,
so what a client sends is unwrapped here into the plain stream the relay reads,
and what goes to it is wrapped just before writing. Small payloads (under 50
bytes, as the server does) and ones zlib cannot shrink go uncompressed.
"""

from __future__ import annotations

import zlib

from sluice.errors import ProtocolError

HEADER = 7
MAX_CHUNK = 0xFFFFFF  # what one compressed packet can carry, before or after compression
MIN_COMPRESS = 50  # smaller payloads travel uncompressed (the server's MIN_COMPRESS_LENGTH)


class CompressedStream:
    """One client connection's compressed packets, unwrapped and wrapped."""

    __slots__ = ("_buf", "_seq")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._seq = 0  # the sequence id of the next compressed packet to the client

    def unwrap(self, data: bytes) -> bytes:
        """The ordinary packets in the complete compressed packets received so far."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= HEADER:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            size = buf[pos + 4] | buf[pos + 5] << 8 | buf[pos + 6] << 16
            end = pos + HEADER + length
            if len(buf) < end:
                break
            body = bytes(buf[pos + HEADER : end])
            out.append(_inflate(body, size) if size else body)
            self._seq = (seq + 1) & 0xFF  # replies go on from the client's last
            pos = end
        del buf[:pos]
        return b"".join(out)

    def wrap(self, data: bytes) -> bytes:
        """`data` (whole ordinary packets) as compressed packets."""
        out: list[bytes] = []
        for start in range(0, len(data), MAX_CHUNK):
            chunk = data[start : start + MAX_CHUNK]
            packed = zlib.compress(chunk) if len(chunk) >= MIN_COMPRESS else chunk
            size = len(chunk)
            if len(packed) >= size:  # not worth it: the bytes as they are
                packed, size = chunk, 0
            out.append(_header(len(packed), self._seq, size))
            out.append(packed)
            self._seq = (self._seq + 1) & 0xFF
        return b"".join(out)


def _header(length: int, seq: int, size: int) -> bytes:
    return length.to_bytes(3, "little") + bytes((seq,)) + size.to_bytes(3, "little")


def _inflate(body: bytes, size: int) -> bytes:
    """Decompress `body`, which must give exactly `size` bytes (never more: a bomb stops)."""
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(body, size)
        if len(plain) == size and not inflater.eof:  # only the stream's end may be left
            plain += inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error as exc:
        raise ProtocolError(f"malformed compressed packet: {exc}") from None
    if len(plain) != size or not inflater.eof or inflater.unused_data:
        raise ProtocolError("compressed packet does not match its stated length")
    return plain
