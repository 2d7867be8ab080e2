"""The data plane's socket calls: `recv`, `send` and `poll` on descriptors.

The compiled build takes them from the C module beside this one (`_sockio.c`), which
makes the system calls holding the interpreter's lock (the standard library releases
and retakes it around each: more work than the call on a non-blocking socket). Without
that module, the same calls through the standard library, with the same results.
"""

from __future__ import annotations

import contextlib
import os
import select
from typing import Final

READ_SIZE: Final = 256 * 1024  # as much as one read takes (as _sockio.c)
MAX_EVENTS: Final = 1024  # sockets taken from the epoll set per call at most


def recv(fd: int) -> bytes | None:
    """What the socket holds, up to READ_SIZE; b"" at its end, None if nothing waits."""
    try:
        return os.read(fd, READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None


def send(fd: int, data: bytes) -> int:
    """How many bytes of `data` the socket took (0 if it would block)."""
    try:
        return os.write(fd, data)
    except (BlockingIOError, InterruptedError):
        return 0


def poll(epoll: select.epoll) -> list[int]:
    """The ready sockets at once, flat: [fd, events, fd, events, ...]."""
    try:
        events = epoll.poll(0, MAX_EVENTS)
    except InterruptedError:
        return []
    return [number for pair in events for number in pair]


with contextlib.suppress(ImportError):  # the compiled build's (_sockio.pyi: the same types)
    from sluice.net._sockio import poll, recv, send  # type: ignore[assignment]  # noqa: F401
