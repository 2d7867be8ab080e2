"""Worker slots: the budget split, the ids each worker gives, and summed snapshots."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sluice.config import Limit, PoolConfig, parse
from sluice.errors import ConfigError
from sluice.observe.histogram import Histogram
from sluice.observe.stats import PoolSnapshot, ProxySnapshot, Snapshot, TargetSnapshot
from sluice.pool.budget import Budgets
from sluice.workers import merge
from sluice.workers.slot import WorkerSlot


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("total", [0, 1, 2, 3, 5, 10, 20, 101])
def test_the_parts_add_up_to_the_whole_and_differ_by_at_most_one(count: int, total: int) -> None:
    parts = [WorkerSlot(i, count).split(total) for i in range(count)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1
    assert parts == sorted(parts, reverse=True)  # the remainder to the first workers


def test_each_worker_draws_on_its_part_of_every_budget() -> None:
    config = PoolConfig(max_connections=Limit(5), max_idle_connections=Limit(3))
    shares = [Budgets(WorkerSlot(i, 2)).join("db", 5432, "p", config) for i in range(2)]
    assert [(s.limit, s.max_idle) for s in shares] == [(3, 2), (2, 1)]
    assert [s.budget.limit for s in shares] == [3, 2]
    percent = PoolConfig(max_connections=Limit(50, percent=True))
    shares = [Budgets(WorkerSlot(i, 2)).join("db", 5432, "p", percent) for i in range(2)]
    for share in shares:
        share.budget.learned_server_max(41)  # 50% of 41: 20, split 10 and 10
    assert [s.limit for s in shares] == [10, 10]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_ids_a_worker_gives_are_its_own(count: int) -> None:
    for index in range(count):
        slot = WorkerSlot(index, count)
        for ident in [slot.random_id() for _ in range(500)]:
            assert 0 < ident < 2**31 and slot.owner(ident) == index
        ids = [slot.next_id(0)]
        for _ in range(5):
            ids.append(slot.next_id(ids[-1]))
        assert ids == sorted(ids) and all(slot.owner(i) == index for i in ids)
        assert slot.next_id(2**31 - 1 - index) == slot.next_id(0)  # wraps to the first


def test_workers_in_the_file() -> None:
    one = {"proxy": [{"name": "p", "listen": ":6432"}]}
    assert parse({"sluice": {"workers": 3}, **one}).workers == 3
    assert parse(one).workers >= 1  # the machine's cores
    for bad in (0, -1, 1000, "2"):
        with pytest.raises(ConfigError, match="workers"):
            parse({"sluice": {"workers": bad}, **one})


def _pool(borrowed: int, queries: int, latency: float, max_wait: float) -> PoolSnapshot:
    histogram = Histogram()
    histogram.observe(latency)
    values = {f.name: 0 for f in dataclasses.fields(PoolSnapshot)}
    return dataclasses.replace(
        PoolSnapshot(**values),  # type: ignore[arg-type]
        proxy="p", engine="postgresql", database="db", user="u", mode="transaction",
        paused=False, borrowed=borrowed, queries=queries, max_wait=max_wait, max_size=2,
        borrow_latency=histogram.snapshot(), query_latency=histogram.snapshot(),
    )  # fmt: skip


def _snapshot(pool: PoolSnapshot, clients: int, server_max: int | None) -> Snapshot:
    proxy = ProxySnapshot(
        "p", "postgresql", "127.0.0.1:6432", clients, 0, 0, clients, clients, 0, 0, 0, 0, 0,
        (pool,),
    )  # fmt: skip
    target = TargetSnapshot("db:5432", ("p",), 2, 2, 1, 1, server_max, 0, 3)
    return Snapshot(100.0, 50.0, (proxy,), (target,))


def test_snapshots_of_the_workers_are_summed() -> None:
    one = _snapshot(_pool(1, 10, 0.001, 0.5), clients=3, server_max=None)
    two = _snapshot(_pool(2, 5, 0.2, 1.5), clients=4, server_max=100)
    two = merge.decode(json.loads(json.dumps(merge.encode(two))))  # as the channel carries it
    summed = merge.merge([one, two])
    (proxy,) = summed.proxies
    assert (proxy.name, proxy.listen, proxy.clients, proxy.received) == (
        "p",
        "127.0.0.1:6432",
        7,
        7,
    )
    (pool,) = proxy.pools
    assert (pool.borrowed, pool.queries, pool.max_size, pool.max_wait) == (3, 15, 4, 1.5)
    assert pool.query_latency.count == 2 and pool.query_latency.total == pytest.approx(0.201)
    (target,) = summed.targets
    assert (target.connections, target.limit, target.evictions) == (4, 4, 6)
    assert (target.proxies, target.server_max_connections) == (("p",), 100)
