"""Latency percentiles in bounded memory: a fixed, log-spaced bucket histogram.

A receiver sees millions of latencies; keeping them all to sort is not an
option. Log-spaced buckets give a constant *relative* error (each bucket is
``GROWTH`` times wider than the previous one, so a reported percentile is
within ~2% of the true value) over a range from 10 microseconds to hours,
with about a thousand counters for the whole fleet.

Per-device histograms use the same bucket numbers but store them sparsely in
a dict, because latencies of one device cluster in a handful of buckets and
ten thousand dense arrays would cost tens of megabytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Lower edge of bucket 1, in milliseconds; smaller values land in bucket 0.
MIN_MS = 0.01
#: Ratio between consecutive bucket edges: the worst relative error of a percentile.
GROWTH = 1.02
_LOG_GROWTH = math.log(GROWTH)
#: Values beyond MIN_MS * GROWTH**(BUCKETS - 2) (about 3 hours) share the last bucket.
BUCKETS = 1 + math.ceil(math.log(1.2e7 / MIN_MS) / _LOG_GROWTH)
#: Percentiles every latency summary carries, by their report names.
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def bucket_of(ms: float) -> int:
    """The bucket index of a latency in milliseconds (negative values count as 0)."""
    if ms < MIN_MS:
        return 0
    index = 1 + int(math.log(ms / MIN_MS) / _LOG_GROWTH)
    return index if index < BUCKETS else BUCKETS - 1


def upper_edge(index: int) -> float:
    """The upper edge of a bucket in milliseconds: what a percentile reports."""
    return MIN_MS * GROWTH**index


class LatencyHistogram:
    """Dense histogram for the whole fleet, with exact count, sum, min and max."""

    __slots__ = ("buckets", "count", "max_ms", "min_ms", "total_ms")

    def __init__(self) -> None:
        self.buckets = [0] * BUCKETS
        self.count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def add(self, ms: float, index: int) -> None:
        """Record one latency whose bucket the caller already computed (shared with
        the device's sparse histogram, so the logarithm is taken once)."""
        self.buckets[index] += 1
        self.count += 1
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        if ms < self.min_ms:
            self.min_ms = ms

    def summary(self) -> dict[str, float | int | None]:
        """``{count, p50, p90, p99, max, min, mean}`` in milliseconds (None when empty)."""
        return summarize(enumerate(self.buckets), self.count, self.max_ms, self.min_ms)


def summarize(
    buckets: Iterable[tuple[int, int]], count: int, max_ms: float, min_ms: float
) -> dict[str, float | int | None]:
    """Percentiles from ``(bucket index, count)`` pairs in increasing index order.

    Each percentile is the upper edge of the bucket holding its rank, clamped to
    the exact extremes so that e.g. p99 never exceeds max.
    """
    out: dict[str, float | int | None] = {"count": count}
    if count == 0:
        out.update({name: None for name, _ in PERCENTILES})
        out.update(max=None, min=None)
        return out
    ranks = [(name, max(1, math.ceil(q * count))) for name, q in PERCENTILES]
    seen = 0
    pending = 0
    for index, n in buckets:
        if not n:
            continue
        seen += n
        while pending < len(ranks) and seen >= ranks[pending][1]:
            value = min(max(upper_edge(index), min_ms), max_ms)
            out[ranks[pending][0]] = round(value, 3)
            pending += 1
        if pending == len(ranks):
            break
    out["max"] = round(max_ms, 3)
    out["min"] = round(min_ms, 3)
    return out


def summarize_sparse(
    buckets: Mapping[int, int], count: int, max_ms: float, min_ms: float
) -> dict[str, float | int | None]:
    """``summarize`` for a per-device sparse histogram."""
    return summarize(sorted(buckets.items()), count, max_ms, min_ms)
