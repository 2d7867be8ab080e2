"""One connection budget per target: every pool pointing at a database server shares it.

A pool is per (proxy, database, user) for PostgreSQL and per (user, capability
profile, charset) for MySQL, but a database's max_connections is per server.
So the limits live here, one `Budget` per target address, and every pool of
every proxy (and control-plane endpoint) that points at that address draws its
connections from it. Its rules, in one place:

- the target never has more than `limit` connections open or opening, counted
  in `used`; `limit` is the largest max_connections among the proxies that
  point at the target (a percent is of the server's own max_connections, once
  a connection has told it), and each proxy also stays within its own
  max_connections (its `Share`);
- a pool that needs a connection and finds no room queues here, once; queued
  pools are served first come, first served, one connection per turn (a pool
  that wants more goes to the back), so no pool starves another;
- room is made by closing an idle connection of another pool (of the same
  proxy when it is that proxy's own limit that is reached): the longest idle
  first, with the reason "closed to make room for pool X";
- a connection coming back to a pool while others are queued is closed to make
  room for the first of them when its pool has no client waiting, or holds
  more than its fair share (`limit` over the pools that are busy or queued);
- idle connections over the target's `max_idle` (the largest among its
  proxies) are closed by `maintain`, the longest idle first, once idle longer
  than IDLE_EXCESS_GRACE;
- with several worker processes (sluice.workers), every limit above is this
  worker's part of the configured one (`WorkerSlot.split`): the parts of all
  workers add up to the configured limit, never more.

A pool tells its budget each time it starts opening a connection (`take`)
and each time one of its connections is gone (`give_back`); nothing else is
counted, and a pool's lending of idle connections never touches the budget
(its only cost on that path is one check that no pool is queued).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from sluice.config import PoolConfig
from sluice.workers.slot import DEFAULT_SLOT, WorkerSlot

if TYPE_CHECKING:
    from sluice.pool.pool import Pool

log: Final = logging.getLogger("sluice.pool")

# Idle connections over max_idle are closed only after this long idle, so a burst
# that ends and comes back within it does not reconnect.
IDLE_EXCESS_GRACE: Final = 10.0


class Share:
    """One proxy's part of its target's budget: its own limits and what it holds."""

    __slots__ = ("budget", "config", "limit", "max_idle", "name", "used")

    def __init__(self, budget: Budget, name: str, config: PoolConfig) -> None:
        self.budget = budget
        self.name = name
        self.config = config
        self.used = 0  # connections of this proxy's pools, open or opening
        self.limit, self.max_idle = budget.sizes(config)

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def update(self, config: PoolConfig) -> None:
        """New pool settings for the same target."""
        self.config = config
        self.budget.resize()


class Budget:
    """The connections one target allows; see the module docstring for the rules."""

    def __init__(self, target: str, slot: WorkerSlot = DEFAULT_SLOT) -> None:
        self.target = target
        self.slot = slot  # this worker's part of every limit
        self.server_max: int | None = None  # the server's max_connections, once learned
        self.shares: list[Share] = []
        self.pools: set[Pool[Any]] = set()
        self.queue: deque[Pool[Any]] = deque()  # pools waiting for room, first come first
        self.used = 0
        self.limit = 0
        self.max_idle = 0
        self.evictions = 0  # idle connections closed to make room for another pool

    # ---- membership ----

    def join(self, name: str, config: PoolConfig) -> Share:
        share = Share(self, name, config)
        self.shares.append(share)
        self.resize()
        return share

    def leave(self, share: Share) -> None:
        """A proxy is gone; its connections still count until they are closed."""
        if share in self.shares:
            self.shares.remove(share)
            self.resize()

    def add(self, pool: Pool[Any]) -> None:
        self.pools.add(pool)

    def remove(self, pool: Pool[Any]) -> None:
        self.pools.discard(pool)
        if pool.queued:
            self.queue.remove(pool)
            pool.queued = False

    def learned_server_max(self, value: int) -> None:
        """The server told its max_connections: percent limits take their real size."""
        self.server_max = value
        self.resize()

    def sizes(self, config: PoolConfig) -> tuple[int, int]:
        """This worker's part of a proxy's (max connections, max idle)."""
        size, idle = config.sizes(self.server_max)
        return self.slot.split(size), self.slot.split(idle)

    def resize(self) -> None:
        for share in self.shares:
            share.limit, share.max_idle = self.sizes(share.config)
        self.limit = max((s.limit for s in self.shares), default=0)
        self.max_idle = max((s.max_idle for s in self.shares), default=0)
        self._serve()  # a larger limit may have made room

    @property
    def idle(self) -> int:
        return sum(len(p.idle) for p in self.pools)

    # ---- room for connections ----

    def take(self, pool: Pool[Any]) -> bool:
        """Room for one more connection of `pool` now, or False with `pool` queued."""
        share = pool.share
        if not self.queue and self.used < self.limit and share.used < share.limit:
            self.used += 1
            share.used += 1
            return True
        self._enqueue(pool)
        self._serve()
        return False

    def give_back(self, pool: Pool[Any], count: int = 1) -> None:
        """`count` connections of `pool` are gone (closed, lost, or failed to open)."""
        self.used -= count
        pool.share.used -= count
        if self.queue:
            self._serve()

    def make_room(self, pool: Pool[Any], conn: Any) -> bool:
        """Close `conn`, coming back to `pool`, if a queued pool should have the room."""
        if pool.queued and len(self.queue) == 1:
            return False  # only `pool` itself waits for room (every release, when saturated)
        taker = self._taker_after_freeing(pool)
        # `pool.size` leaves `conn` out: a pool under its fair share keeps it for its waiters
        if taker is None or (pool.waiters and pool.size < self._fair_share()):
            return False
        self._evict(pool, conn, taker)
        self._dequeue(taker)
        self._lend_room(taker)
        return True

    def _enqueue(self, pool: Pool[Any]) -> None:
        if not pool.queued:
            pool.queued = True
            self.queue.append(pool)

    def _dequeue(self, pool: Pool[Any]) -> None:
        self.queue.remove(pool)
        pool.queued = False

    def _lend_room(self, pool: Pool[Any]) -> None:
        self.used += 1
        pool.share.used += 1
        pool.room_granted()
        if pool.wants_room:
            self._enqueue(pool)  # to the back: one connection per turn

    def _serve(self) -> None:
        """Give room to queued pools in order, making it from idle connections if need be."""
        served = True
        while served and self.queue:
            served = False
            for pool in tuple(self.queue):
                if not pool.wants_room:
                    self._dequeue(pool)
                elif self._room_for(pool):
                    self._dequeue(pool)
                    self._lend_room(pool)
                    served = True

    def _room_for(self, pool: Pool[Any]) -> bool:
        """Whether `pool` may open a connection now, closing another pool's idle one if need be."""
        if pool.share.full:  # its own proxy's limit: room only from that proxy's pools
            victim = self._longest_idle(pool, pool.share)
        elif self.used >= self.limit:
            victim = self._longest_idle(pool, None)
        else:
            return True
        if victim is None:
            return False
        self._evict(victim, victim.idle.pop(0), pool)
        return True

    def _longest_idle(self, taker: Pool[Any], share: Share | None) -> Pool[Any] | None:
        """The pool (not `taker`; of `share` if given) whose oldest idle connection is oldest."""
        best: Pool[Any] | None = None
        for pool in self.pools:
            if pool is taker or not pool.idle or (share is not None and pool.share is not share):
                continue
            if best is None or pool.idle[0].idle_since < best.idle[0].idle_since:
                best = pool
        return best

    def _evict(self, owner: Pool[Any], conn: Any, taker: Pool[Any]) -> None:
        # closed so that `taker`, queued for room, can open a connection of its own
        conn.close(f"closed to make room for pool {taker.name}")
        self.evictions += 1
        self.used -= 1
        owner.share.used -= 1

    def _taker_after_freeing(self, pool: Pool[Any]) -> Pool[Any] | None:
        """The first queued pool that one connection of `pool` closing would let open one."""
        for other in self.queue:
            helped = other.share is pool.share or not other.share.full
            if other is not pool and other.wants_room and helped:
                return other
        return None

    def _fair_share(self) -> int:
        """The target's limit over the pools lending connections or queued for room."""
        busy = sum(1 for p in self.pools if p.borrowed or p.queued)
        return max(1, self.limit // max(1, busy))

    # ---- maintenance ----

    def maintain(self) -> None:
        """Close idle connections over the target's max_idle, the longest idle first."""
        excess = self.idle - self.max_idle
        if excess <= 0:
            return
        cutoff = time.monotonic() - IDLE_EXCESS_GRACE
        idle = [(c.idle_since, id(c), p, c) for p in self.pools for c in p.idle]
        oldest = sorted(x for x in idle if x[0] < cutoff)[:excess]
        gone: dict[Pool[Any], int] = {}
        for _, _, pool, conn in oldest:
            pool.idle.remove(conn)
            conn.close(f"more idle connections than max_idle_connections for {self.target}")
            gone[pool] = gone.get(pool, 0) + 1
        for pool, count in gone.items():  # after every close: giving back may close others
            self.give_back(pool, count)


class Budgets:
    """Every target's budget, by address; a proxy joins the one its target names."""

    def __init__(self, slot: WorkerSlot = DEFAULT_SLOT) -> None:
        self.slot = slot
        self.by_target: dict[str, Budget] = {}

    def join(self, host: str, port: int, name: str, config: PoolConfig) -> Share:
        key = f"{host.lower()}:{port}"
        budget = self.by_target.get(key)
        if budget is None:
            budget = self.by_target[key] = Budget(key, self.slot)
        return budget.join(name, config)

    def maintain(self) -> None:
        for key, budget in list(self.by_target.items()):
            budget.maintain()
            if not budget.shares and not budget.used:
                del self.by_target[key]  # no proxy points here and nothing is open
