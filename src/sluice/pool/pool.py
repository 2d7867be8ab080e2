"""A pool of backend connections for one (proxy, database, user).

The pool lends connections and takes them back; it knows nothing of wire
protocols. Its rules, in one place:

- idle connections are a LIFO stack: the most recently used goes out first, so
  under low load the rest grow idle and are closed by the idle timeout;
- waiters are FIFO, each with its own future and deadline; a waiter that timed
  out is never handed a connection;
- the pool never has more than `max_size` connections open or opening;
- a connection whose generation is older than the pool's (after a reload or
  RECONNECT) or whose lifetime is over is closed when it comes back, not lent;
- a connection that sat idle longer than `check_delay` is checked before it is
  lent (`acquire` only; `try_acquire` leaves it for the slow path).

`try_acquire` is the fast path: no await, no task, no future. Everything that
must wait goes through `acquire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sluice.errors import PoolTimeout, ServerError, SluiceError

log = logging.getLogger("sluice.pool")


class PooledConnection(Protocol):
    created_at: float
    idle_since: float
    generation: int

    @property
    def broken(self) -> bool: ...

    def close(self, reason: str) -> None: ...

    async def check(self) -> bool: ...


C = TypeVar("C", bound=PooledConnection)


@dataclass(slots=True)
class PoolLimits:
    max_size: int
    max_idle: int
    borrow_timeout: float
    lifetime: float
    idle_timeout: float
    check_delay: float


class PoolStats:
    """Counters read by the metrics exporter and the admin console."""

    __slots__ = (
        "borrow_count",
        "borrow_wait_total",
        "connect_failures",
        "connects",
        "pins",
        "queries",
        "query_time_total",
        "timeouts",
        "transactions",
    )

    def __init__(self) -> None:
        self.borrow_count = 0
        self.borrow_wait_total = 0.0
        self.timeouts = 0
        self.connects = 0
        self.connect_failures = 0
        self.transactions = 0
        self.queries = 0
        self.query_time_total = 0.0
        self.pins = 0


class Pool(Generic[C]):
    """Lends connections made by `connect`; see the module docstring for the rules."""

    def __init__(self, name: str, limits: PoolLimits, connect: Callable[[], Awaitable[C]]) -> None:
        self.name = name
        self.limits = limits
        self._connect = connect
        self.idle: list[C] = []
        self.waiters: deque[asyncio.Future[C]] = deque()
        self.opening = 0
        self.borrowed = 0
        self.generation = 0
        self.paused = False
        self.closed = False
        self.stats = PoolStats()
        self.last_error: SluiceError | None = None

    @property
    def size(self) -> int:
        return len(self.idle) + self.borrowed + self.opening

    # ---- lending ----

    def try_acquire(self) -> C | None:
        """A connection at once, or None: the caller then awaits `acquire`."""
        if self.paused or self.waiters:
            return None
        idle = self.idle
        now = time.monotonic()
        while idle:
            conn = idle[-1]
            if self._expired(conn, now):
                idle.pop()
                conn.close(self._expiry_reason(conn, now))
                continue
            if now - conn.idle_since > self.limits.check_delay:
                return None
            idle.pop()
            self._lend()
            return conn
        return None

    async def acquire(self) -> C:
        """Borrow a connection, waiting up to the borrow timeout."""
        start = time.monotonic()
        while True:
            conn = await self._wait(start)
            if time.monotonic() - conn.idle_since <= self.limits.check_delay:
                return conn
            if await conn.check():
                return conn
            self.borrowed -= 1
            conn.close("server failed its liveness check")
            self._maybe_grow()

    async def _wait(self, start: float) -> C:
        conn = None if self.paused else self.try_acquire_checked()
        if conn is not None:
            return conn
        fut: asyncio.Future[C] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self._maybe_grow()
        remaining = self.limits.borrow_timeout - (time.monotonic() - start)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(remaining, 0.0))
        except TimeoutError:
            self.stats.timeouts += 1
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())  # handed over just as we gave up: give it back
            raise PoolTimeout(
                f"no database connection available within {self.limits.borrow_timeout:g}s"
            ) from None
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self.waiters.remove(fut)

    def try_acquire_checked(self) -> C | None:
        """Like try_acquire, but also lends connections that need a liveness check."""
        if self.waiters:
            return None
        idle, now = self.idle, time.monotonic()
        while idle:
            conn = idle.pop()
            if self._expired(conn, now):
                conn.close(self._expiry_reason(conn, now))
                continue
            self._lend()
            return conn
        return None

    def _lend(self) -> None:
        self.borrowed += 1
        self.stats.borrow_count += 1

    def release(self, conn: C) -> None:
        """Take a connection back, hand it to the first waiter, keep it idle, or close it."""
        self.borrowed -= 1
        now = time.monotonic()
        if conn.broken:
            conn.close("server connection broken")
        elif self._expired(conn, now):
            conn.close(self._expiry_reason(conn, now))
        elif not self._hand_over(conn):
            conn.idle_since = now
            if (
                len(self.idle) >= self.limits.max_idle
                and self.limits.max_idle < self.limits.max_size
            ):
                conn.close("too many idle connections (max idle)")
            else:
                self.idle.append(conn)
            return
        else:
            return
        self._maybe_grow()

    def forget(self, conn: C) -> None:
        """A borrowed connection died; its slot is free again."""
        self.borrowed -= 1
        self._maybe_grow()

    def _hand_over(self, conn: C) -> bool:
        if self.paused:
            return False
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                self._lend()
                fut.set_result(conn)
                return True
        return False

    # ---- growing ----

    def _maybe_grow(self) -> None:
        pending = sum(1 for w in self.waiters if not w.done())
        while pending > self.opening and self.size < self.limits.max_size and not self.closed:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            conn = await self._connect()
        except SluiceError as exc:
            self._open_failed(exc)
            return
        except (OSError, TimeoutError) as exc:
            self._open_failed(ServerError(f"cannot connect to the database: {exc}"))
            return
        self.opening -= 1
        self.stats.connects += 1
        self.last_error = None
        conn.generation = self.generation
        conn.idle_since = time.monotonic()
        self.borrowed += 1  # release() counts it back
        self.release(conn)

    def _open_failed(self, exc: SluiceError) -> None:
        self.opening -= 1
        self.stats.connect_failures += 1
        self.last_error = exc
        log.warning("pool %s: cannot open a database connection: %s", self.name, exc)
        while self.waiters:  # tell those waiting now, rather than let them time out
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
                break

    # ---- maintenance ----

    def _expired(self, conn: C, now: float) -> bool:
        return (
            conn.generation != self.generation
            or now - conn.created_at > self.limits.lifetime
            or conn.broken
        )

    def _expiry_reason(self, conn: C, now: float) -> str:
        if conn.broken:
            return "server connection broken"
        if conn.generation != self.generation:
            return "pool settings changed (reload)"
        return "server lifetime over"

    def maintain(self) -> None:
        """Close idle connections past their idle timeout or lifetime (oldest first)."""
        now = time.monotonic()
        keep: list[C] = []
        for conn in self.idle:
            if self._expired(conn, now):
                conn.close(self._expiry_reason(conn, now))
            elif now - conn.idle_since > self.limits.idle_timeout:
                conn.close("server idle timeout")
            else:
                keep.append(conn)
        self.idle[:] = keep

    def remove_idle(self, conn: C) -> None:
        """An idle connection died on its own (the server closed it)."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        while self.idle and self.waiters:
            conn = self.idle.pop()
            self.borrowed += 1
            self.release(conn)
        self._maybe_grow()

    def renew(self, limits: PoolLimits) -> None:
        """New settings: connections made under the old ones are closed as they come back."""
        self.limits = limits
        self.generation += 1
        for conn in self.idle:
            conn.close("pool settings changed (reload)")
        self.idle.clear()
        self._maybe_grow()

    def close(self, reason: str) -> None:
        self.closed = True
        for conn in self.idle:
            conn.close(reason)
        self.idle.clear()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ServerError(reason))
