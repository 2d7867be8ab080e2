"""A pool of backend connections for one (proxy, database, user).

The pool lends connections and takes them back; it knows nothing of wire
protocols. Its rules, in one place:

- idle connections are a LIFO stack: the most recently used goes out first, so
  under low load the rest grow idle and are closed by the idle timeout;
- waiters are FIFO, each with its deadline; a waiter that timed out or gave up
  is never handed a connection. A waiter hears the pool's answer (a connection,
  or why there is none) from a callback of its own soon after (`Waiter`), never
  from inside the call that freed the connection: answers given in one pass of the
  event loop are delivered together by one callback;
- the pool opens a connection only with room from its target's `Budget`
  (pool/budget.py: the limits are per target, shared by every pool that points
  at it); each connection gone is given back to the budget, and while another
  pool is queued there a connection coming back may be closed to make room;
- a connection whose generation is older than the pool's (after a reload or
  RECONNECT) or whose lifetime is over is closed when it comes back, not lent;
- a connection that sat idle longer than `check_delay` is checked before it is
  lent (`acquire` only; `try_acquire` leaves it for the slow path).

`try_acquire` is the fast path: no await, no task, no future. A session that must
wait queues itself (`wait`: no future either); coroutines await `acquire`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from mypy_extensions import i64, mypyc_attr, trait

from sluice.errors import PoolTimeout, ServerError, SluiceError
from sluice.net.clock import now as clock_now
from sluice.observe.histogram import Histogram
from sluice.pool.budget import Share

log: Final = logging.getLogger("sluice.pool")
# Bound to a Final name: compiled, a C static; imported, a dict lookup at every call.
monotonic: Final = time.monotonic


@mypyc_attr(allow_interpreted_subclasses=True)
class PooledConnection:
    """What the pool reads and calls of a connection: the base of every engine's server
    connection (`sluice.session.backend.BackendConn`).

    A class rather than a protocol: the compiled build then reads these fields as members
    of a C struct, where a protocol's are looked up by name on every read (the pool reads
    them each time it lends or takes back a connection). Plain subclasses (the pool's
    tests) are allowed."""

    __slots__ = ("created_at", "generation", "idle_since")

    def __init__(self) -> None:
        self.created_at = monotonic()
        self.idle_since = self.created_at
        self.generation = 0

    @property
    def broken(self) -> bool:
        """Not fit to lend (closed, or left with work outstanding)."""
        return False

    @abc.abstractmethod
    def close(self, reason: str) -> None:
        """Close the connection, saying why (the pool's reason: lifetime, room, ...)."""

    @abc.abstractmethod
    async def check(self) -> bool:
        """Whether the connection still answers (asked before lending a stale one)."""


C = TypeVar("C", bound=PooledConnection)


@trait
class Waiter:
    """What waits for a pool's connection (a client session). A mypyc trait: compiled, the
    pool's answer is a call through a table, not a lookup by name."""

    __slots__ = ()  # (interpreted, a base without slots gives every session a __dict__)

    @abc.abstractmethod
    def pool_answered(self, wait: Wait) -> None:
        """The pool's answer to `wait`: `wait.conn` is lent to the waiter, or `wait.error`
        says why there is none. Called from a callback of its own, once, and never for a
        wait that was cancelled."""


class Wait:
    """One waiter's place in a pool's queue, and then the pool's answer."""

    __slots__ = ("cancelled", "conn", "deadline", "error", "waiter")

    def __init__(self, waiter: Waiter, deadline: float) -> None:
        self.waiter = waiter
        # on time.monotonic's clock (the event loop's, with asyncio's loop and uvloop's)
        self.deadline = deadline
        self.cancelled = False
        self.conn: Any = None  # the connection lent, once answered
        self.error: SluiceError | None = None  # or why there is none

    def cancel(self) -> None:
        """The waiter no longer wants a connection: it is never answered; a connection
        already chosen for it goes back to the pool."""
        self.cancelled = True


class WaitQueue:
    """A pool's waiters, first come first served: a list read from `_head`. (A deque's
    append and popleft are calls by name in the compiled build, and its truth a third;
    these are list operations and field reads.)"""

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[Wait | None] = []  # taken ones are None until the list is cut
        self._head: i64 = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def append(self, wait: Wait) -> None:
        self._items.append(wait)

    def first(self) -> Wait:
        """The longest waiting (the queue is not empty)."""
        wait = self._items[self._head]
        assert wait is not None
        return wait

    def popleft(self) -> Wait:
        """Take the longest waiting (the queue is not empty)."""
        items = self._items
        head = self._head
        wait = items[head]
        assert wait is not None
        items[head] = None  # (nothing kept alive by the queue once taken)
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= _CUT_AT and head * 2 >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return wait


_CUT_AT: Final = 64  # taken places kept at the queue's head before it is cut


class _FutureWaiter(Waiter):
    """A coroutine's wait (`Pool.request`): the answer becomes the future's result."""

    __slots__ = ("future", "pool", "wait")

    def __init__(self, pool: Pool[Any], future: asyncio.Future[Any]) -> None:
        self.pool = pool
        self.future = future
        self.wait: Wait | None = None

    def pool_answered(self, wait: Wait) -> None:
        future = self.future
        if future.done():  # cancelled, its callback not run yet
            if wait.conn is not None:
                self.pool.release(wait.conn)
        elif wait.conn is not None:
            future.set_result(wait.conn)
        else:
            future.set_exception(wait.error or SluiceError("no connection"))

    def future_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() and self.wait is not None:
            self.wait.cancel()


@dataclass(slots=True)
class PoolLimits:
    """A pool's own timings; how many connections it may have is its budget's to say."""

    borrow_timeout: float
    lifetime: float
    idle_timeout: float
    check_delay: float


class PoolStats:
    """Counters read by the metrics exporter and the admin console."""

    __slots__ = (
        "borrow_count",
        "borrow_latency",
        "borrow_wait_total",
        "connect_failures",
        "connects",
        "pins",
        "queries",
        "query_latency",
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
        self.borrow_latency = Histogram()  # seconds from asking for a connection to getting it
        self.query_latency = Histogram()  # seconds from a query sent to the server to its reply


class Pool(Generic[C]):
    """Lends connections made by `connect`; see the module docstring for the rules."""

    def __init__(
        self, name: str, limits: PoolLimits, connect: Callable[[], Awaitable[C]], share: Share
    ) -> None:
        self.name = name
        self.limits = limits
        self._connect = connect
        self.share = share
        self.budget = share.budget
        self._room_wanted = share.budget.queue  # pools queued for room at the target
        self.queued = False  # in that queue
        self.idle: list[C] = []
        self.waiters = WaitQueue()  # one timer serves them all
        self._timer: asyncio.TimerHandle | None = None
        self._answers: list[Wait] = []  # answered, for the next `_deliver`
        # The event loop the pool lends in, kept from its first wait: asking asyncio for
        # the running loop costs a system call (it compares the process id) every time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.opening = 0
        self.borrowed = 0
        self.generation = 0
        self._retired_why = ""  # why connections of an older generation close
        self.paused = False
        self.closed = False
        self.stats = PoolStats()
        self.last_error: SluiceError | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.budget.add(self)

    @property
    def size(self) -> int:
        return len(self.idle) + self.borrowed + self.opening

    @property
    def wants_room(self) -> bool:
        """More clients wait than connections are being opened for them."""
        return len(self.waiters) > self.opening and not self.closed

    # ---- lending ----

    def try_acquire(self) -> C | None:
        """A connection at once, or None: the caller then awaits `acquire`."""
        if self.paused or self.waiters:
            return None
        idle = self.idle
        now = clock_now()
        while idle:
            conn = idle[-1]
            if self._expired(conn, now):
                idle.pop()
                self._discard(conn, self._expiry_reason(conn, now))
                continue
            if now - conn.idle_since > self.limits.check_delay:
                return None
            idle.pop()
            self._lend()
            return conn
        return None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the pool lends in, asked of asyncio once (see `_loop`)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def wait(self, waiter: Waiter) -> Wait:
        """Queue `waiter`: it gets a connection, or PoolTimeout at the deadline, from
        `Waiter.pool_answered`; `Wait.cancel` gives up."""
        loop = self._event_loop()
        # (the reactor's clock, read once per pass: the loop's `time` is a call by name)
        wait = Wait(waiter, clock_now() + self.limits.borrow_timeout)
        waiters = self.waiters
        waiters.append(wait)
        if self._timer is None:
            self._timer = loop.call_at(waiters.first().deadline, self._time_out)
        if self.idle:
            self._check_stale()
        if len(waiters) > self.opening and not self.queued:
            self._maybe_grow()  # (queued at the budget: it calls when there is room)
        return wait

    def request(self) -> asyncio.Future[C]:
        """`wait` for a coroutine: the future gets a connection or the error; cancelling
        it gives up (a connection handed over just then goes back to the pool)."""
        future: asyncio.Future[C] = self._event_loop().create_future()
        waiter = _FutureWaiter(self, future)
        waiter.wait = self.wait(waiter)
        future.add_done_callback(waiter.future_done)
        return future

    async def acquire(self) -> C:
        """Borrow a connection, waiting up to the borrow timeout."""
        conn = self.try_acquire()
        return conn if conn is not None else await self.request()

    def _time_out(self) -> None:
        """Refuse the waiters whose deadline passed (they are first: FIFO, same timeout)."""
        self._timer = None
        loop = self._event_loop()
        now, waiters = clock_now(), self.waiters
        while waiters and (waiters.first().cancelled or waiters.first().deadline <= now):
            wait = waiters.popleft()
            if not wait.cancelled:
                self.stats.timeouts += 1
                self._answer(wait, None, PoolTimeout(self._timeout_text()))
        if waiters:
            self._timer = loop.call_at(waiters.first().deadline, self._time_out)

    def _answer(self, wait: Wait, conn: C | None, error: SluiceError | None) -> None:
        """Answer `wait` (taken off the queue) at the next `_deliver`."""
        wait.conn, wait.error = conn, error
        answers = self._answers
        if not answers:
            self._event_loop().call_soon(self._deliver)
        answers.append(wait)

    def _deliver(self) -> None:
        """Tell the waiters answered since the last call; a connection for a wait
        cancelled meanwhile comes back."""
        answers, self._answers = self._answers, []
        for wait in answers:
            if wait.cancelled:
                if wait.conn is not None:
                    self.release(wait.conn)
                continue
            try:
                wait.waiter.pool_answered(wait)
            except Exception:  # the waiter's bug: the other waiters still hear
                log.exception("pool %s: a waiter failed on its answer", self.name)

    def _timeout_text(self) -> str:
        return f"no database connection available within {self.limits.borrow_timeout:g}s"

    def _check_stale(self) -> None:
        """Idle connections that need a liveness check are checked, then handed over."""
        now = monotonic()
        while self.idle and not self.paused:
            conn = self.idle.pop()
            if self._expired(conn, now):
                self._discard(conn, self._expiry_reason(conn, now))
                continue
            self.borrowed += 1
            self._spawn(self._check_then_release(conn))

    async def _check_then_release(self, conn: C) -> None:
        if await conn.check():
            conn.idle_since = monotonic()
            self.release(conn)
            return
        conn.close("server failed its liveness check")
        self.forget(conn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lend(self) -> None:
        self.borrowed += 1
        self.stats.borrow_count += 1

    def release(self, conn: C) -> None:
        """Take a connection back: close it (expired, or to make room for another pool),
        hand it to the first waiter, or keep it idle."""
        self.borrowed -= 1
        now = clock_now()
        if self._expired(conn, now):
            self._discard(conn, self._expiry_reason(conn, now))
            self._maybe_grow()
        elif self._room_wanted and self.budget.make_room(self, conn):
            self._maybe_grow()  # our own waiters queue for room in turn
        elif self.waiters and self._hand_over(conn):
            return
        else:
            conn.idle_since = now
            self.idle.append(conn)

    def forget(self, conn: C) -> None:
        """A borrowed connection died; its room is free again."""
        self.borrowed -= 1
        self.budget.give_back(self)
        self._maybe_grow()

    def _discard(self, conn: C, reason: str) -> None:
        """Close a connection no longer lent or idle, and give its room back."""
        conn.close(reason)
        self.budget.give_back(self)

    def _hand_over(self, conn: C) -> bool:
        if self.paused:
            return False
        waiters = self.waiters
        while waiters:
            wait = waiters.popleft()
            if not wait.cancelled:
                self._lend()
                self._answer(wait, conn, None)
                return True
        return False

    # ---- growing ----

    def _maybe_grow(self) -> None:
        """Open connections for the waiters (a few may have given up: harmless), as far as
        the budget has room; without room the pool is queued there for it."""
        while self.wants_room and self.budget.take(self):
            self.room_granted()

    def room_granted(self) -> None:
        """The budget counted one more connection for this pool: open it."""
        self.opening += 1
        self._spawn(self._open())

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
        conn.idle_since = monotonic()
        self.borrowed += 1  # release() counts it back
        self.release(conn)

    def _open_failed(self, exc: SluiceError) -> None:
        self.opening -= 1
        self.budget.give_back(self)
        self.stats.connect_failures += 1
        self.last_error = exc
        log.warning("pool %s: cannot open a database connection: %s", self.name, exc)
        while self.waiters:  # tell one waiting now, rather than let them time out
            wait = self.waiters.popleft()
            if not wait.cancelled:
                self._answer(wait, None, exc)
                break

    # ---- maintenance ----

    def _expired(self, conn: C, now: float) -> bool:
        return (
            conn.broken
            or conn.generation != self.generation
            or now - conn.created_at > self.limits.lifetime
        )

    def _expiry_reason(self, conn: C, now: float) -> str:
        if conn.broken:
            return "server connection broken"
        if self.closed:
            return "pool closed"
        if conn.generation != self.generation:
            return self._retired_why
        return "server lifetime over"

    def maintain(self) -> None:
        """Close idle connections past idle timeout or lifetime (max idle is the budget's)."""
        now = monotonic()
        keep: list[C] = []
        for conn in self.idle:  # bottom of the stack first: the longest idle
            if self._expired(conn, now):
                conn.close(self._expiry_reason(conn, now))
            elif now - conn.idle_since > self.limits.idle_timeout:
                conn.close("server idle timeout")
            else:
                keep.append(conn)
        gone = len(self.idle) - len(keep)
        self.idle[:] = keep
        if gone:
            self.budget.give_back(self, gone)

    def remove_idle(self, conn: C) -> None:
        """An idle connection died on its own (the server closed it)."""
        try:
            self.idle.remove(conn)
        except ValueError:
            return  # not idle: lent or already gone, its borrower or closer gives it back
        self.budget.give_back(self)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        while self.idle and self.waiters:
            conn = self.idle.pop()
            self.borrowed += 1
            self.release(conn)
        self._maybe_grow()

    def renew(self, limits: PoolLimits, share: Share | None = None) -> None:
        """New settings: connections made under the old ones are closed as they come back.

        With a new `share` (the proxy's target changed) the pool moves to that
        target's budget, its connections still lent counted there until they come
        back and close: the new target is never over its limit, the old one may be
        by those for that while.
        """
        self.limits = limits
        self.generation += 1
        self._retired_why = "pool settings changed (reload)"
        self._close_idle(self._retired_why)
        if share is not None and share is not self.share:
            self._move_to(share)
        self._maybe_grow()

    def _move_to(self, share: Share) -> None:
        self.budget.remove(self)
        self.budget.give_back(self, self.size)
        self.share, self.budget = share, share.budget
        self._room_wanted = share.budget.queue
        self.budget.add(self)
        self.budget.used += self.size
        share.used += self.size

    def retire(self, reason: str) -> None:
        """Close the idle connections now, and the lent ones (or those being reset) as they
        come back; the pool goes on with new ones."""
        self.generation += 1
        self._retired_why = reason
        self._close_idle(reason)

    def _close_idle(self, reason: str) -> None:
        for conn in self.idle:
            conn.close(reason)
        gone = len(self.idle)
        self.idle.clear()
        if gone:
            self.budget.give_back(self, gone)

    def close(self, reason: str) -> None:
        """No more lending: idle connections close now, lent ones as they come back."""
        self.closed = True
        self.generation += 1
        self.budget.remove(self)
        self._close_idle(reason)
        while self.waiters:
            wait = self.waiters.popleft()
            if not wait.cancelled:
                self._answer(wait, None, ServerError(reason))
