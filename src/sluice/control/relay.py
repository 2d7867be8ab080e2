"""A byte relay between two TCP connections, for the guarded front of a DB instance.

Design: each connection has one `Pipe` protocol; what one reads the other
writes, as it arrived (no framing, no copies beyond the read itself). Flow
control is the transports' own: when a side's write buffer passes its high
water mark, it stops reading the other side until the buffer drains, so a
slow reader holds at most `HIGH_WATER` bytes (plus one read) per direction.
What a side reads before the two are linked (a PostgreSQL client speaks
first) is kept, up to `HIGH_WATER`, and sent on at `link`. An end of stream
is passed on as a half-close (`write_eof`) and the other direction keeps
flowing; the pair is closed once both directions have ended
or either connection is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

HIGH_WATER = 256 * 1024  # bytes waiting to be written before the other side stops reading


class Pipe(asyncio.Protocol):
    """One end of a relayed pair; `link` joins two of them."""

    __slots__ = ("_early", "_on_close", "ended", "lost", "other", "transport")

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: Pipe | None = None
        self.ended = False  # this side sent its end of stream
        self.lost = False
        self._early = bytearray()  # read before `link` (what a client sends first)
        self._on_close = on_close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.write(data)
            return
        self._early += data  # not linked yet: kept, and no more read beyond a bound
        if len(self._early) >= HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.ended = True
        other = self.other
        if other is None:
            return True  # passed on once linked
        if other.transport is None or other.ended:
            self.close()  # both directions are done
            return False
        if other.transport.can_write_eof():
            other.transport.write_eof()  # after what is still buffered
            return True  # keep sending the other direction
        self.close()
        return False

    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.other is not None and not self.other.lost:
            self.other.close()  # the pair ends with either side (buffered data still goes)
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        other = self.other
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.transport.close()

    def abort(self) -> None:
        """Drop both connections now (the instance is going away)."""
        for side in (self, self.other):
            if side is not None and side.transport is not None:
                side.transport.abort()


def link(one: Pipe, two: Pipe) -> None:
    """Join two connected pipes: what each read meanwhile goes on, then both read on."""
    one.other, two.other = two, one
    for side in (one, two):
        other = side.other
        assert other is not None and other.transport is not None
        if side._early:
            other.transport.write(bytes(side._early))
            side._early.clear()
        if side.ended:
            side.ended = False
            side.eof_received()
        elif side.transport is not None and not side.transport.is_closing():
            side.transport.resume_reading()
