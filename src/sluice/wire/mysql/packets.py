"""Packet framing and the protocol's basic encodings, free of I/O.

Every MySQL packet is a 3-byte little-endian payload length, a 1-byte sequence
id, then the payload. A payload of 0xFFFFFF bytes or more travels as several
packets: each full one (exactly 0xFFFFFF bytes) says "more follows", and the
first shorter one, possibly empty, ends the logical packet. Sequence ids count
up (modulo 256) within one exchange and restart at 0 with each command.

`PacketReader` buffers until a logical packet is complete and hands back its
first sequence id and the joined payload. It checks a header before the body
arrives: a logical payload beyond the configured maximum is a protocol error as
soon as a header announces it, never an allocation. The pieces of a logical
packet must carry consecutive sequence ids. Partial input means "nothing yet".

The rest are the encodings used inside payloads: length-encoded integers and
strings, NUL-terminated strings, and helpers to re-number packets the proxy
injects or drops.
"""

from __future__ import annotations

import struct
from typing import Final

from mypy_extensions import i64

from sluice.errors import PacketTooLarge, ProtocolError

MAX_CHUNK: Final = 0xFFFFFF  # the largest physical payload; a packet this size continues

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_unpack_u64: Final = _U64.unpack_from


class PacketReader:
    """Whole logical MySQL packets from a stream of bytes.

    The bytes received are read where they are (`_buf`, from `_pos`): a chunk that
    starts when everything before it was returned, the common case, is not copied.
    Chunks received while a packet is incomplete wait in `_more` and are joined to
    what is left once they hold the bytes it needs (`_need`), not at every chunk."""

    __slots__ = (
        "_buf",
        "_more",
        "_more_len",
        "_need",
        "_parts",
        "_parts_len",
        "_pos",
        "_seq",
        "max_size",
    )

    def __init__(self, max_size: int) -> None:
        self._buf = b""
        # (offsets and lengths are i64: machine integers in the compiled build)
        self._pos: i64 = 0
        self._more: list[bytes] = []  # received after `_buf`, not joined to it yet
        self._more_len: i64 = 0
        self._need: i64 = 0  # bytes from `_pos` that the packet there needs (0: unknown)
        self.max_size = max_size
        self._parts: list[bytes] = []  # full pieces of a logical packet being joined
        self._parts_len: i64 = 0
        self._seq = 0  # the first piece's sequence id

    def feed(self, data: bytes) -> None:
        if self._pos == len(self._buf) and not self._more:  # all returned: read in place
            self._buf = data
            self._pos = 0
            return
        self._more.append(data)
        self._more_len += len(data)

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned (pieces being joined included)."""
        return len(self._buf) - self._pos + self._more_len + self._parts_len

    def _join(self) -> None:
        """What is left of `_buf` and the chunks received since, as one buffer."""
        self._buf = b"".join([self._buf[self._pos :], *self._more])
        self._pos = 0
        self._more.clear()
        self._more_len = 0
        self._need = 0

    def next(self) -> tuple[int, bytes] | None:
        """The next logical packet as (first sequence id, payload), or None if incomplete."""
        if self._more and len(self._buf) - self._pos + self._more_len >= self._need:
            self._join()
        buf = self._buf
        pos = self._pos
        size: i64 = len(buf)
        while True:
            if size - pos < 4:
                self._need = 4
                return None
            length = u24_at(buf, pos)
            seq = buf[pos + 3]
            if self._parts or length > self.max_size:
                self._check(length, seq)
            end = pos + 4 + length
            if size < end:
                self._need = 4 + length
                return None
            payload = buf[pos + 4 : end]
            self._pos = pos = end
            if length == MAX_CHUNK:
                if not self._parts:
                    self._seq = seq
                self._parts.append(payload)
                self._parts_len += length
                continue
            if not self._parts:
                return seq, payload
            self._parts.append(payload)
            joined = b"".join(self._parts)
            self._parts.clear()
            self._parts_len = 0
            return self._seq, joined

    def _check(self, length: int, seq: int) -> None:
        """Refuse a header before its body is buffered."""
        if self._parts and seq != (self._seq + len(self._parts)) & 0xFF:
            raise ProtocolError(f"packet out of order: sequence id {seq} in a continuation")
        if self._parts_len + length > self.max_size:
            raise PacketTooLarge(f"packet of {self._parts_len + length}+ bytes exceeds the maximum")

    def take_rest(self) -> bytes:
        """Everything buffered and not yet returned (e.g. bytes sent before a TLS handshake).

        Raise ProtocolError if a logical packet was half joined: it cannot be replayed.
        """
        if self._parts:
            raise ProtocolError("stream ends inside a continued packet")
        self._join()
        rest = self._buf
        self._buf = b""
        return rest


# ---- writing packets ---------------------------------------------------------


# The headers of packets with sequence id 0 (a command) up to _SMALL bytes: compiled, an
# index into a tuple is a few instructions, `int.to_bytes` some two hundred.
_SMALL: Final = 1024
_COMMAND_HEADERS: Final = tuple(size.to_bytes(4, "little") for size in range(_SMALL))


def header(length: int, seq: int) -> bytes:
    """The 4-byte header of one physical packet."""
    return (length | (seq & 0xFF) << 24).to_bytes(4, "little")  # length (3 bytes), then seq


def frame(payload: bytes, seq: int) -> bytes:
    """Frame a logical payload as packets numbered from `seq`, split at 0xFFFFFF bytes.

    A payload whose length is an exact multiple of 0xFFFFFF (zero excepted) ends
    with an empty packet, so the reader knows nothing more follows.
    """
    size = len(payload)
    if seq == 0 and size < _SMALL:  # a command: its header read from a table
        return _COMMAND_HEADERS[size] + payload
    if size < MAX_CHUNK:  # `header` inline: once per packet relayed
        return (size | (seq & 0xFF) << 24).to_bytes(4, "little") + payload
    pieces = []
    for start in range(0, size + 1, MAX_CHUNK):
        chunk = payload[start : start + MAX_CHUNK]
        pieces.append(header(len(chunk), seq))
        pieces.append(chunk)
        seq += 1
    return b"".join(pieces)


def seq_after(seq: int, length: int) -> int:
    """The sequence id that follows a payload of `length` bytes framed from `seq`."""
    return (seq + length // MAX_CHUNK + 1) & 0xFF


def renumber(data: bytes, seq: int) -> tuple[bytes, int]:
    """Re-number the whole packets in `data` from `seq`; return them and the next id.

    For a run of packets the proxy forwards after injecting or dropping some:
    the peer checks that ids count up without a gap.
    """
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if len(out) - pos < 4:
            raise ProtocolError("partial packet header in renumber")
        length = out[pos] | out[pos + 1] << 8 | out[pos + 2] << 16
        if pos + 4 + length > len(out):
            raise ProtocolError("partial packet in renumber")
        out[pos + 3] = seq & 0xFF
        seq += 1
        pos += 4 + length
    return bytes(out), seq & 0xFF


# ---- integers and strings inside payloads ------------------------------------


def lenenc_int(value: int) -> bytes:
    """A length-encoded integer (1, 3, 4 or 9 bytes)."""
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + _U16.pack(value)
    if value < 1 << 24:
        return b"\xfd" + _U32.pack(value)[:3]
    return b"\xfe" + _U64.pack(value)


def read_lenenc_int(data: bytes, pos: int) -> tuple[int, int]:
    """Read a length-encoded integer at `pos`; return it and the position after it.

    0xFB (NULL in a row) and 0xFF are not integers here: ProtocolError.
    """
    if pos >= len(data):
        raise ProtocolError("truncated length-encoded integer")
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = 2 if first == 0xFC else 3 if first == 0xFD else 8 if first == 0xFE else 0
    if not size:
        raise ProtocolError(f"invalid length-encoded integer prefix 0x{first:02x}")
    if pos + 1 + size > len(data):
        raise ProtocolError("truncated length-encoded integer")
    if size == 2:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if size == 3:
        return u24_at(data, pos + 1), pos + 4
    return int(_unpack_u64(data, pos + 1)[0]), pos + 9


def lenenc_str(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


def read_lenenc_str(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a length-encoded string at `pos`; return it and the position after it."""
    size, pos = read_lenenc_int(data, pos)
    end = pos + size
    if end > len(data):
        raise ProtocolError("length-encoded string runs past the packet")
    return data[pos:end], end


def nul_str(value: str | bytes) -> bytes:
    """A NUL-terminated string (text is encoded as UTF-8)."""
    raw = value.encode() if isinstance(value, str) else value
    if b"\x00" in raw:
        raise ValueError("NUL inside a NUL-terminated string")
    return raw + b"\x00"


def read_nul_str(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a NUL-terminated string at `pos`; return it and the position after the NUL."""
    end = data.find(b"\x00", pos)
    if end < 0:
        raise ProtocolError("unterminated string in packet")
    return data[pos:end], end + 1


# The integers below are read into `i64` locals: machine integers in the compiled build (a
# byte read as an `int` is a tagged word, and each shift of one a call), plain ints
# interpreted, where an `i64(...)` conversion would be a call per byte.


def u24_at(data: bytes, pos: i64) -> i64:
    """The little-endian 3-byte integer at `pos` (a packet header's length; the caller
    knows the bytes are there)."""
    low: i64 = data[pos]
    mid: i64 = data[pos + 1]
    high: i64 = data[pos + 2]
    return low | mid << 8 | high << 16


def read_u16(data: bytes, pos: int) -> i64:
    if pos < 0 or pos + 2 > len(data):
        raise ProtocolError("truncated packet")
    at: i64 = pos  # (checked first: `pos` may come from a length a peer sent)
    low: i64 = data[at]
    high: i64 = data[at + 1]
    return low | high << 8


def read_u32(data: bytes, pos: int) -> i64:
    if pos < 0 or pos + 4 > len(data):
        raise ProtocolError("truncated packet")
    at: i64 = pos
    low: i64 = u24_at(data, at)
    high: i64 = data[at + 3]
    return low | high << 24


def u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")
