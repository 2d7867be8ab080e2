"""Stats snapshots across worker processes: to JSON and back, and summed into one.

Each worker has its own pools, so each takes its own snapshot (observe/stats.py);
the worker answering a scrape or an admin `SHOW` asks its siblings for theirs
over the peer channel and sums them here, so the exporter and the console read
one snapshot as with a single worker. Counters, gauges and histograms add up;
a pool or proxy is the same one in every worker when its names are; a limit is
the sum of the workers' parts, which is the configured limit. The longest wait
is the largest, a pool is paused if any worker's part is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sluice.observe.histogram import HistogramSnapshot
from sluice.observe.stats import (
    ClientInfo,
    PoolSnapshot,
    ProxySnapshot,
    ServerInfo,
    Snapshot,
    TargetSnapshot,
)

T = TypeVar("T")


# ---- to JSON and back ----


def encode(snap: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON-ready values (histograms as their three fields)."""
    return dataclasses.asdict(snap)


def decode(raw: dict[str, Any]) -> Snapshot:
    proxies = tuple(
        ProxySnapshot(**{**p, "pools": tuple(_pool(q) for q in p["pools"])}) for p in raw["proxies"]
    )
    targets = tuple(TargetSnapshot(**{**t, "proxies": tuple(t["proxies"])}) for t in raw["targets"])
    return Snapshot(raw["taken_at"], raw["started_at"], proxies, targets)


def _pool(raw: dict[str, Any]) -> PoolSnapshot:
    return PoolSnapshot(
        **{
            **raw,
            "borrow_latency": _histogram(raw["borrow_latency"]),
            "query_latency": _histogram(raw["query_latency"]),
        }
    )


def _histogram(raw: dict[str, Any]) -> HistogramSnapshot:
    return HistogramSnapshot(tuple(raw["bounds"]), tuple(raw["counts"]), raw["total"])


def encode_rows(rows: Iterable[ClientInfo | ServerInfo]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(row) for row in rows]


def decode_clients(raw: list[dict[str, Any]]) -> list[ClientInfo]:
    return [ClientInfo(**row) for row in raw]


def decode_servers(raw: list[dict[str, Any]]) -> list[ServerInfo]:
    return [ServerInfo(**row) for row in raw]


# ---- summing ----

_LARGEST = frozenset({"max_wait"})
_ANY = frozenset({"paused"})


def _sum_fields(items: list[T], skip: frozenset[str] = frozenset()) -> T:
    """One dataclass whose numbers are the sums of `items`' (texts from the first)."""
    first = items[0]
    values: dict[str, Any] = {}
    for field in dataclasses.fields(first):  # type: ignore[arg-type]
        name = field.name
        if name in skip:
            continue
        column = [getattr(item, name) for item in items]
        values[name] = _combine(name, column)
    return dataclasses.replace(first, **values)  # type: ignore[type-var]


def _combine(name: str, column: list[Any]) -> Any:
    first = column[0]
    if name in _LARGEST:
        return max(column)
    if name in _ANY:
        return any(column)
    if isinstance(first, bool | str) or first is None:
        return first
    if isinstance(first, HistogramSnapshot):
        counts = [sum(c) for c in zip(*(h.counts for h in column), strict=True)]
        return HistogramSnapshot(first.bounds, tuple(counts), sum(h.total for h in column))
    if isinstance(first, int | float):
        return sum(column)
    return first


def _grouped(items: Iterable[T], key: Callable[[T], Any]) -> list[list[T]]:
    groups: dict[Any, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """The sum of the workers' snapshots; the first is this worker's own."""
    proxies = []
    for group in _grouped((p for s in snapshots for p in s.proxies), lambda p: p.name):
        pools = [
            _sum_fields(g)
            for g in _grouped((q for p in group for q in p.pools), lambda q: (q.database, q.user))
        ]
        proxies.append(
            dataclasses.replace(_sum_fields(group, frozenset({"pools"})), pools=tuple(pools))
        )
    targets = []
    for tgroup in _grouped((t for s in snapshots for t in s.targets), lambda t: t.target):
        summed = _sum_fields(tgroup, frozenset({"proxies", "server_max_connections"}))
        names = dict.fromkeys(n for t in tgroup for n in t.proxies)
        known = [t.server_max_connections for t in tgroup if t.server_max_connections is not None]
        targets.append(
            dataclasses.replace(
                summed, proxies=tuple(names), server_max_connections=known[0] if known else None
            )
        )
    first = snapshots[0]
    started = min(s.started_at for s in snapshots)
    return Snapshot(first.taken_at, started, tuple(proxies), tuple(targets))
