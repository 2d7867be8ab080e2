"""`Pool` and the target's `Budget` together, on an event loop, without a database.

The connections are plain `PooledConnection`s that record how they were closed;
everything else is the real pool and budget. Each test runs its own loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from sluice.config import Limit, PoolConfig
from sluice.errors import PoolTimeout
from sluice.pool.budget import IDLE_EXCESS_GRACE, Budget, Budgets, Share
from sluice.pool.pool import Pool, PooledConnection, PoolLimits


class Conn(PooledConnection):
    """A connection that is always healthy until closed; remembers why it was closed."""

    opened = 0

    def __init__(self) -> None:
        super().__init__()
        Conn.opened += 1
        self.reason = ""

    @property
    def broken(self) -> bool:
        return bool(self.reason)

    def close(self, reason: str) -> None:
        self.reason = reason

    async def check(self) -> bool:
        return True


def limits(borrow_timeout: float = 5.0) -> PoolLimits:
    return PoolLimits(
        borrow_timeout=borrow_timeout,
        lifetime=3600.0,
        idle_timeout=600.0,
        check_delay=30.0,
    )


def pool(name: str, share: Share, borrow_timeout: float = 5.0) -> Pool[Conn]:
    async def connect() -> Conn:
        await asyncio.sleep(0)
        return Conn()

    return Pool(name, limits(borrow_timeout), connect, share)


def share_of(max_connections: int, budget: Budget | None = None, idle: int = 100) -> Share:
    budget = budget or Budget("db:5432")
    config = PoolConfig(max_connections=Limit(max_connections), max_idle_connections=Limit(idle))
    return budget.join("proxy", config)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


async def settle() -> None:
    """Let the pools' connection-opening tasks finish."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_pools_of_a_target_never_open_more_than_its_limit() -> None:
    async def body() -> None:
        share = share_of(3)
        pools = [pool(f"p{i}", share) for i in range(4)]
        waits = [p.request() for p in pools for _ in range(5)]
        await settle()
        assert share.budget.used == 3
        assert sum(p.size for p in pools) == 3
        assert sum(f.done() for f in waits) == 3
        for f in waits:
            f.cancel()

    run(body)


def test_an_idle_connection_of_another_pool_is_closed_to_make_room() -> None:
    async def body() -> None:
        share = share_of(2)
        a, b = pool("a", share), pool("b", share)
        first, second = await a.acquire(), await a.acquire()
        a.release(first)
        a.release(second)
        assert len(a.idle) == 2 and share.budget.used == 2
        got = await b.acquire()
        assert got not in (first, second)
        assert first.reason == "closed to make room for pool b"  # the longest idle goes
        assert second.reason == "" and a.idle == [second]
        assert share.budget.used == 2 and share.budget.evictions == 1

    run(body)


def test_a_connection_coming_back_makes_room_for_a_queued_pool() -> None:
    async def body() -> None:
        share = share_of(1)
        a, b = pool("a", share), pool("b", share)
        held = await a.acquire()
        waiting = b.request()
        await settle()
        assert not waiting.done() and b.queued
        a.release(held)  # a has no one waiting: the room goes to b
        assert held.reason == "closed to make room for pool b"
        got = await waiting
        assert got is not held and share.budget.used == 1

    run(body)


def test_pools_waiting_for_room_are_served_first_come_first_served() -> None:
    async def body() -> None:
        share = share_of(1)
        a, b, c = pool("a", share), pool("b", share), pool("c", share)
        held = await a.acquire()
        for_c = c.request()  # c asks first
        for_b = b.request()
        await settle()
        a.release(held)
        conn_c = await for_c
        assert not for_b.done()
        c.release(conn_c)
        assert conn_c.reason == "closed to make room for pool b"
        await for_b

    run(body)


def test_a_busy_pool_over_its_fair_share_yields_to_a_queued_one() -> None:
    async def body() -> None:
        share = share_of(4)
        a, b = pool("a", share), pool("b", share)
        held = [await a.acquire() for _ in range(4)]
        more_a = [a.request() for _ in range(4)]  # a has waiters of its own
        for_b = b.request()
        await settle()
        a.release(held[0])  # a holds 4 of 4 with b queued: over its share of 2
        assert held[0].reason == "closed to make room for pool b"
        await for_b
        a.release(held[1])  # no other pool queued: straight to a's own waiter
        await settle()  # (the answer comes from a callback of its own)
        assert held[1].reason == "" and sum(f.done() for f in more_a) == 1
        more_b = b.request()
        await settle()
        a.release(held[2])  # a holds 3 of 4 with b queued again: over its share
        assert held[2].reason == "closed to make room for pool b"
        await more_b
        last_b = b.request()
        await settle()
        a.release(held[3])  # a holds 2 of 4 now, its fair share: kept for its own waiter
        await settle()
        assert held[3].reason == "" and sum(f.done() for f in more_a) == 2
        assert not last_b.done() and share.budget.used == 4
        last_b.cancel()
        for f in more_a:
            f.cancel()

    run(body)


def test_a_pool_without_room_times_out_with_a_clear_error() -> None:
    async def body() -> None:
        share = share_of(1)
        a, b = pool("a", share), pool("b", share, borrow_timeout=0.05)
        await a.acquire()
        with pytest.raises(PoolTimeout, match=r"no database connection available within 0\.05s"):
            await b.acquire()
        assert share.budget.used == 1 and b.size == 0

    run(body)


def test_each_proxy_stays_within_its_own_limit_on_a_shared_target() -> None:
    async def body() -> None:
        budget = Budget("db:5432")
        small, large = share_of(1, budget), share_of(3, budget)
        assert budget.limit == 3  # the largest of the proxies' limits
        s, other_s = pool("small/a", small), pool("small/b", small)
        held = await s.acquire()
        waiting = other_s.request()
        await settle()
        assert budget.used == 1 and not waiting.done()  # the small proxy is full, not the target
        big = pool("large/a", large)
        conns = [await big.acquire() for _ in range(2)]
        assert budget.used == 3
        s.release(held)  # room for the small proxy's other pool, from its own share
        assert held.reason == "closed to make room for pool small/b"
        await waiting
        assert (small.used, large.used, budget.used) == (1, 2, 3)
        for conn in conns:
            big.release(conn)

    run(body)


def test_a_failed_open_gives_its_room_back() -> None:
    async def body() -> None:
        share = share_of(1)

        async def refuse() -> Conn:
            raise OSError("connection refused")

        broken: Pool[Conn] = Pool("broken", limits(), refuse, share)
        with pytest.raises(Exception, match="connection refused"):
            await broken.acquire()
        assert share.budget.used == 0
        await pool("ok", share).acquire()
        assert share.budget.used == 1

    run(body)


def test_closed_and_lost_connections_give_their_room_back() -> None:
    async def body() -> None:
        share = share_of(3)
        a = pool("a", share)
        x, y, z = [await a.acquire() for _ in range(3)]
        x.close("lost")
        a.forget(x)
        a.release(y)
        a.remove_idle(y)  # died while idle
        a.close("proxy removed")
        a.release(z)  # comes back to a closed pool: closed
        assert z.reason == "pool closed"
        assert share.budget.used == 0 and share.used == 0

    run(body)


def test_idle_connections_over_the_targets_max_idle_are_closed() -> None:
    async def body() -> None:
        share = share_of(6, idle=2)
        a, b = pool("a", share), pool("b", share)
        conns = [(p, await p.acquire()) for p in (a, a, a, b, b)]
        for p, conn in conns:
            p.release(conn)
        old = time.monotonic() - IDLE_EXCESS_GRACE - 1
        for i, (_, conn) in enumerate(conns):
            conn.idle_since = old - 5 + i  # the first released is the longest idle
        share.budget.maintain()
        closed = [c.reason for _, c in conns]
        assert closed[:3] == ["more idle connections than max_idle_connections for db:5432"] * 3
        assert closed[3:] == ["", ""]
        assert share.budget.used == 2 and share.budget.idle == 2

    run(body)


def test_a_percent_limit_follows_the_servers_max_connections() -> None:
    budgets = Budgets()
    config = PoolConfig(max_connections=Limit(50, percent=True))
    one = budgets.join("DB", 5432, "one", config)
    two = budgets.join("db", 5432, "two", config)  # the same target: one budget
    assert one.budget is two.budget and one.budget.limit == 50  # of 100 until known
    one.budget.learned_server_max(40)
    assert (one.limit, two.limit, one.budget.limit) == (20, 20, 20)
    other = budgets.join("db", 5433, "three", config)
    assert other.budget is not one.budget


def test_a_waiter_hears_of_its_connection_from_a_callback_of_its_own() -> None:
    """Released while another client's reply is being handled, a connection reaches its
    waiter after that call returns, not inside it; waiters answered together hear in order."""

    async def body() -> None:
        a = pool("a", share_of(2))
        held = [await a.acquire() for _ in range(2)]
        first, second = a.request(), a.request()
        a.release(held[1])
        a.release(held[0])
        assert not first.done() and not second.done()  # nothing called back from release
        assert a.borrowed == 2 and not a.waiters  # both lent, to the waiters in turn
        await settle()
        assert first.result() is held[1] and second.result() is held[0]

    run(body)


def test_a_waiter_that_gives_up_as_its_connection_comes_gives_it_back() -> None:
    """Given up after the pool chose it and before it heard: the connection goes to the
    next waiter, never lost and never lent twice."""

    async def body() -> None:
        a = pool("a", share_of(1))
        held = await a.acquire()
        leaving, staying = a.request(), a.request()
        a.release(held)  # chosen for `leaving`...
        leaving.cancel()  # ...which gives up before it hears
        await settle()
        assert staying.result() is held and a.borrowed == 1 and not a.idle
        a.release(held)
        assert a.idle == [held] and a.borrowed == 0

    run(body)


def test_a_waiter_that_gave_up_is_passed_over() -> None:
    async def body() -> None:
        a = pool("a", share_of(1))
        held = await a.acquire()
        gone, waiting = a.request(), a.request()
        gone.cancel()
        await settle()
        a.release(held)
        await settle()
        assert waiting.result() is held and a.borrowed == 1

    run(body)


def test_many_waiters_are_served_in_order_and_none_is_kept_once_served() -> None:
    """A long queue (its head cut as it goes) serves its waiters first come first served,
    each once; a waiter served is no longer referenced by the queue."""

    async def body() -> None:
        a = pool("a", share_of(1), borrow_timeout=30)
        held = await a.acquire()
        asked = [a.request() for _ in range(300)]
        assert len(a.waiters) == 300
        served = []
        for n, request in enumerate(asked):
            a.release(held)
            await settle()
            held = request.result()
            served.append(n)
            assert len(a.waiters) == 299 - n
            if n == 150:  # taken places are let go: the queue holds only those waiting
                assert all(w is None for w in a.waiters._items[: a.waiters._head])
                assert sum(w is not None for w in a.waiters._items) == 149
        assert served == list(range(300)) and not a.waiters and a.borrowed == 1

    run(body)
