"""Framing: whole messages out of a byte stream, with a cap on their size.

`MessageReader` buffers until a message is complete and hands back the whole
message (header included), so it can be forwarded unchanged or rewritten. It is
used for everything the client sends and for the handshake with a server. A
length below 4 or above the configured maximum is a protocol error, never an
allocation. Partial input simply means "nothing yet".

The bytes a read brought are kept as they came: a message that fills a read on its
own (the common case) is handed back without a copy, and several in one read are
slices of it. Reads that leave a message incomplete are kept in a list and joined
once, when enough has arrived (never a copy per read, however small the pieces).
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

from sluice.errors import ProtocolError

_NO_PARTS: Final[tuple[bytes, ...]] = ()


def _int32(buf: bytes, pos: i64) -> i64:
    """The big-endian unsigned int32 at `pos` (machine integers in the compiled build, as
    the offsets below: no tagged arithmetic per message)."""
    b1: i64 = buf[pos]  # (i64 locals: no call per byte interpreted, as i64() is)
    b2: i64 = buf[pos + 1]
    b3: i64 = buf[pos + 2]
    b4: i64 = buf[pos + 3]
    return b1 << 24 | b2 << 16 | b3 << 8 | b4


class MessageReader:
    """Whole PostgreSQL messages (or startup packets) from a stream of bytes."""

    __slots__ = ("_buf", "_held", "_parts", "_pos", "max_size")

    def __init__(self, max_size: int) -> None:
        self._buf = b""  # a read (or reads joined), consumed up to `_pos`
        self._pos: i64 = 0
        self._parts: list[bytes] | None = None  # later reads, not yet joined to `_buf`
        self._held: i64 = 0  # their length
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        if self._parts is None and self._pos == len(self._buf):  # nothing pending
            self._buf = data
            self._pos = 0
        elif self._parts is None:
            self._parts = [data]
            self._held = len(data)
        else:
            self._parts.append(data)
            self._held += len(data)

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf) - self._pos + self._held

    def _have(self, size: i64) -> bool:
        """Whether `size` bytes are there from `_pos` on, joined into `_buf` if need be."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= size:
            return True
        parts = self._parts
        if parts is None or len(buf) - pos + self._held < size:
            return False
        self._buf = b"".join([buf[pos:], *parts])
        self._pos = 0
        self._parts = None
        self._held = 0
        return True

    def _take(self, end: i64) -> bytes:
        """The bytes from `_pos` to `end`, consumed."""
        buf, pos = self._buf, self._pos
        if end == len(buf):
            self._buf = b""  # keep no read alive once it is consumed
            self._pos = 0
            return buf if pos == 0 else buf[pos:]
        self._pos = end
        return buf[pos:end]

    def next_startup(self) -> bytes | None:
        """The next startup packet (int32 length, then body), or None if incomplete."""
        if not self._have(4):
            return None
        length = _int32(self._buf, self._pos)
        if length < 8 or length > 10000:
            raise ProtocolError(f"invalid startup packet length {length}")
        if not self._have(length):
            return None
        return self._take(self._pos + length)

    def next(self) -> bytes | None:
        """The next whole regular message, or None if incomplete."""
        if not self._have(5):
            return None
        buf, pos = self._buf, self._pos
        length = _int32(buf, pos + 1)
        if length < 4 or length > self.max_size:
            raise ProtocolError(f"invalid message length {length} for type {chr(buf[pos])!r}")
        if not self._have(1 + length):
            return None
        return self._take(self._pos + 1 + length)

    def take_rest(self) -> bytes:
        """Everything buffered and not yet returned (e.g. bytes sent before a TLS handshake)."""
        rest = b"".join([self._buf[self._pos :], *(self._parts or _NO_PARTS)])
        self._buf = b""
        self._pos = 0
        self._parts = None
        self._held = 0
        return rest
