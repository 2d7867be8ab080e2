"""The fixed-bucket latency histogram: bucket placement (Prometheus `le`), sums, snapshots."""

from __future__ import annotations

import math

import pytest

from sluice.observe.histogram import LATENCY_BUCKETS, Histogram, HistogramSnapshot

BOUNDS = (0.001, 0.01, 0.1)


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (0.0, 0),
        (0.0005, 0),
        (0.001, 0),  # on the bound: le, so the lower bucket
        (0.0010001, 1),
        (0.01, 1),
        (0.05, 2),
        (0.1, 2),
        (0.1000001, 3),  # above the last bound: +Inf
        (1e9, 3),
    ],
)
def test_observe_lands_in_the_first_bucket_whose_bound_is_not_below(
    value: float, bucket: int
) -> None:
    hist = Histogram(BOUNDS)
    hist.observe(value)
    expected = [0, 0, 0, 0]
    expected[bucket] = 1
    assert list(hist.snapshot().counts) == expected
    assert hist.total == value
    assert hist.count == 1


def test_snapshot_is_cumulative_and_frozen_in_time() -> None:
    hist = Histogram(BOUNDS)
    for value in (0.0002, 0.002, 0.003, 0.2, 0.05):
        hist.observe(value)
    snap = hist.snapshot()
    hist.observe(0.0001)  # later observations do not change a snapshot taken before
    assert isinstance(snap, HistogramSnapshot)
    assert (snap.bounds, snap.counts) == (BOUNDS, (1, 2, 1, 1))
    assert snap.total == pytest.approx(0.2552)
    assert snap.count == 5
    assert snap.cumulative() == [(0.001, 1), (0.01, 3), (0.1, 4), (math.inf, 5)]
    assert hist.snapshot().counts == (2, 2, 1, 1)


def test_empty_histogram() -> None:
    snap = Histogram().snapshot()
    assert snap.bounds == LATENCY_BUCKETS
    assert snap.count == 0 and snap.total == 0.0
    assert snap.cumulative()[-1] == (math.inf, 0)
    assert len(snap.cumulative()) == len(LATENCY_BUCKETS) + 1


@pytest.mark.parametrize("bounds", [(), (0.1, 0.1), (0.2, 0.1), (0.1, math.inf)])
def test_bad_bounds_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


def test_counts_stay_exact_over_many_observations() -> None:
    hist = Histogram(BOUNDS)
    for i in range(1000):
        hist.observe(i / 5000)
    for _ in range(300):
        hist.observe(0.0005)
    counts = hist.snapshot().counts
    assert counts == (306, 45, 450, 499) and sum(counts) == hist.count == 1300
    assert hist.total == pytest.approx(sum(i / 5000 for i in range(1000)) + 300 * 0.0005)


def test_an_observed_zero_is_counted_in_the_first_bucket() -> None:
    hist = Histogram(BOUNDS)
    hist.observe_zero()
    hist.observe_zero()
    hist.observe(0.0)
    hist.observe(0.05)
    snap = hist.snapshot()
    assert snap.counts == (3, 0, 1, 0) and snap.count == 4 and hist.count == 4
    assert snap.total == pytest.approx(0.05)
