"""The time of the reactor's pass over the ready sockets, for the relay's timestamps.

A transaction stamps the time several times (a connection lent and taken back, a query
sent and answered, the client last active), and every read of `time.monotonic` from
compiled code is a call and a boxed float. Everything handled in one pass of `Reactor`
(`sluice.net.transport`) happened when that pass began, to within the pass (a few
transactions' worth of work), so the pass reads the clock once and `now()` returns that
reading; outside a pass (a timer, a task resumed by the event loop) it reads the clock.
"""

from __future__ import annotations

import time
from typing import Final

monotonic: Final = time.monotonic


class PassClock:
    """`time.monotonic()` at the start of the reactor's current pass, while one runs."""

    __slots__ = ("in_pass", "now")

    def __init__(self) -> None:
        self.now = monotonic()
        self.in_pass = False

    def begin(self) -> None:
        self.now = monotonic()
        self.in_pass = True

    def end(self) -> None:
        self.in_pass = False


CLOCK: Final = PassClock()


def now() -> float:
    """`time.monotonic()`, or the time the reactor's current pass began."""
    clock = CLOCK
    return clock.now if clock.in_pass else monotonic()
