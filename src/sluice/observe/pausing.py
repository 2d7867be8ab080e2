"""PAUSE and RESUME of a worker's pools, as the admin console asks for them.

A paused pool lends no connection; PAUSE returns once the borrowed ones are
back (PgBouncer's meaning). With several workers, the console's worker runs
this for its own pools and asks each sibling to run it for theirs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.session.views import PoolView, Running

POLL = 0.05  # seconds between looks at the borrowed connections


def matching_pools(app: Running, database: str | None) -> list[PoolView]:
    """The pools of `database` (every pool when None) of every proxy of this worker."""
    return [
        pool
        for proxy in app.proxies.values()
        for pool in proxy.pools.values()
        if database is None or pool.database == database
    ]


async def pause(pools: list[PoolView]) -> None:
    """Stop lending from `pools`; return once every borrowed connection is back."""
    for pool in pools:
        pool.pool.pause()
    while any(pool.pool.borrowed for pool in pools):
        await asyncio.sleep(POLL)


def resume(pools: list[PoolView]) -> None:
    for pool in pools:
        pool.pool.resume()
