"""A fixed-bucket latency histogram, cheap enough for the relay path.

Kept free of other Sluice imports so the pool can use it without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Final

# Upper bounds in seconds: from 100 us (a pooled borrow) to the default borrow timeout.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per bucket (the last one is +Inf), their sum and the sum of observed values."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) pairs, ending with (inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class _Count:
    """One bucket's count: adding to a native integer field allocates nothing, where a
    count kept in a list is boxed again (a new int object past 256) at every addition."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Histogram:
    """A fixed-bucket latency histogram: `observe` is a scan of the bounds and two additions.

    A value lands in the first bucket whose upper bound is >= it (Prometheus
    `le` semantics); values above the last bound land in the +Inf bucket.
    """

    __slots__ = ("_counts", "bounds", "total", "zeros")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if not bounds or any(b >= c for b, c in pairwise(bounds)):
            raise ValueError("histogram bounds must be a non-empty increasing sequence")
        if bounds[-1] == float("inf"):
            raise ValueError("the +Inf bucket is implicit; do not list it")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [_Count() for _ in range(len(bounds) + 1)]
        self.total = 0.0
        self.zeros = 0  # observations of 0: in the first bucket (`observe_zero`)

    def observe(self, seconds: float) -> None:
        # From the lowest bound up: the relay's latencies land in the first few buckets,
        # and the compiled build compares unboxed floats (a bisect boxes the value and
        # compares Python objects).
        index = 0
        for bound in self.bounds:
            if seconds <= bound:
                break
            index += 1
        self._counts[index].n += 1
        self.total += seconds

    def observe_zero(self) -> None:
        """`observe(0.0)` as one addition (a connection lent at once, every transaction)."""
        self.zeros += 1

    @property
    def count(self) -> int:
        return sum(count.n for count in self._counts) + self.zeros

    def snapshot(self) -> HistogramSnapshot:
        counts = [count.n for count in self._counts]
        counts[0] += self.zeros
        return HistogramSnapshot(self.bounds, tuple(counts), self.total)
