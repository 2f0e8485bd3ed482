"""Per-record time buckets: fine enough for a p99, small enough to ride on every ack.

A worker times each ``process()`` call and counts it in a bucket; the coordinator adds the
counts up per stage. Bucket ``k`` holds durations in ``[2**(k/4), 2**((k+1)/4))``
microseconds (four buckets per doubling, so a quantile read from them is within 19% of
the true value); bucket 0 also holds everything under one microsecond.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping

__all__ = ["BUCKETS_PER_DOUBLING", "bucket_of", "count_buckets", "quantile"]

BUCKETS_PER_DOUBLING = 4


#: The buckets' lower edges in seconds: bucket k starts at ``_EDGES[k]`` (up to 2**50 µs).
_EDGES = [2 ** (k / BUCKETS_PER_DOUBLING) / 1e6 for k in range(50 * BUCKETS_PER_DOUBLING)]


def bucket_of(seconds: float) -> int:
    """The bucket a duration of ``seconds`` falls in."""
    return max(0, bisect_right(_EDGES, seconds) - 1)


def count_buckets(durations: Iterable[float], counts: dict[int, int]) -> None:
    """Add one to ``counts[bucket]`` for each of ``durations`` (seconds), as bucket_of says."""
    # Once per process() call, so not a search per duration (a bisect of 200 edges cost
    # 0.2 us each, a fortieth of a small record's whole work): sorted at C speed (floats
    # compare fast there), then a search per bucket the durations span, a dozen or so.
    ordered = sorted(durations)
    if not ordered:
        return
    start = 0
    last = len(_EDGES) - 1
    for bucket in range(bucket_of(ordered[0]), bucket_of(ordered[-1]) + 1):
        # Those below the next bucket's lower edge are in this one (bucket 0: all below).
        end = len(ordered) if bucket == last else bisect_left(ordered, _EDGES[bucket + 1], start)
        if end > start:
            counts[bucket] = counts.get(bucket, 0) + end - start
            start = end


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The upper edge, in seconds, of the bucket holding the ``q`` quantile; None if empty."""
    total = sum(counts.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(counts):  # the bucket the loop stops at is the answer
        seen += counts[bucket]
        if seen >= rank:
            break
    return float(2 ** ((bucket + 1) / BUCKETS_PER_DOUBLING) / 1e6)
