"""Framing: whole messages out of a byte stream, with a cap on their size.

`MessageReader` buffers until a message is complete and hands back the whole
message (header included), so it can be forwarded unchanged or rewritten. It is
used for everything the client sends and for the handshake with a server. A
length below 4 or above the configured maximum is a protocol error, never an
allocation. Partial input simply means "nothing yet".
"""

from __future__ import annotations

import struct
from typing import Final

from sluice.errors import ProtocolError

_I: Final = struct.Struct("!I")
_unpack_len: Final = _I.unpack_from


class MessageReader:
    """Whole PostgreSQL messages (or startup packets) from a stream of bytes."""

    __slots__ = ("_buf", "_pos", "max_size")

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        if self._pos:  # drop what was returned (cheap: bytearray deletes its head in place)
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf) - self._pos

    def next_startup(self) -> bytes | None:
        """The next startup packet (int32 length, then body), or None if incomplete."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        length = _unpack_len(buf, pos)[0]
        if length < 8 or length > 10000:
            raise ProtocolError(f"invalid startup packet length {length}")
        if len(buf) - pos < length:
            return None
        self._pos = pos + length
        return bytes(buf[pos : pos + length])

    def next(self) -> bytes | None:
        """The next whole regular message, or None if incomplete."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        length = _unpack_len(buf, pos + 1)[0]
        if length < 4 or length > self.max_size:
            raise ProtocolError(f"invalid message length {length} for type {chr(buf[pos])!r}")
        end = pos + 1 + length
        if len(buf) < end:
            return None
        self._pos = end
        if end == len(buf) and pos == 0:
            data = bytes(buf)
            buf.clear()
            self._pos = 0
            return data
        return bytes(buf[pos:end])

    def take_rest(self) -> bytes:
        """Everything buffered and not yet returned (e.g. bytes sent before a TLS handshake)."""
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest
