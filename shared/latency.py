"""A job's latency and throughput figures, kept in its counter shards: no results scan.

Each result transaction ADDs to a counter shard (:mod:`shared.store.terminal_writes`) the
latency of its answered requests, as a sum (for the mean) and as counts in a fixed
log-scale histogram (for the percentiles), and keeps the shard's first start and last
write. Shards are summed on read (:class:`JobTiming` ``+``).

The histogram: bucket 0 holds latencies under 10 ms, buckets 1..48 three per doubling from
10 ms (bucket ``k`` is ``[10·2^((k-1)/3), 10·2^(k/3))`` ms, up to 655 s, about 11 minutes),
bucket 49 anything longer. A percentile is read as the geometric middle of the bucket its
rank falls in, so within the range it is within a factor 2^(1/6) of the exact nearest-rank
percentile: -10.9 % to +12.2 % (:data:`RESOLUTION`, "±12 %"). Under 10 ms reads as 10 ms,
over the range as its end.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

LOWEST_MS = 10
PER_DOUBLING = 3
#: Buckets between the first bound and the last: 16 doublings, 10 ms to 655,360 ms.
RANGE_BUCKETS = 48
#: Bucket 0 (under 10 ms), the range, and the overflow.
BUCKETS = RANGE_BUCKETS + 2
#: ``BOUNDS[i]`` is the lower bound of bucket ``i + 1``.
BOUNDS: tuple[float, ...] = tuple(LOWEST_MS * 2 ** (i / PER_DOUBLING) for i in range(RANGE_BUCKETS + 1))
#: The largest relative error of a percentile within the range: the geometric middle of a
#: bucket is within a factor 2^(1/6) of anything in it.
RESOLUTION = 2 ** (1 / (2 * PER_DOUBLING)) - 1
#: How the bucket counts are named on a counter shard (``lat#00`` .. ``lat#49``).
BUCKET_PREFIX = "lat#"
SUM_ATTRIBUTE = "latency_sum_ms"
FIRST_STARTED = "first_started_at"
LAST_FINISHED = "updated_at"
#: A result's ``latency_ms`` when nothing timed its call (no call takes 0 ms).
NOT_TIMED = 0


def bucket_of(latency_ms: float) -> int:
    """The histogram bucket of one latency."""
    return bisect.bisect_right(BOUNDS, latency_ms)


def bucket_attribute(bucket: int) -> str:
    return f"{BUCKET_PREFIX}{bucket:02d}"


def bucket_value(bucket: int) -> float:
    """What a latency in ``bucket`` reads as: the bucket's geometric middle (its bound at
    either end of the range)."""
    if bucket <= 0:
        return float(LOWEST_MS)
    if bucket > RANGE_BUCKETS:
        return BOUNDS[-1]
    return math.sqrt(BOUNDS[bucket - 1] * BOUNDS[bucket])


def percentile_of(counts: Sequence[int], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0..100) read from bucket counts; None for none."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for bucket, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(len(counts) - 1)  # pragma: no cover - seen reaches total


def _parse_time(text: str) -> datetime | None:
    """An ISO 8601 time (naive ones taken as UTC), or None for anything else."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _earliest(texts: Iterable[str]) -> str:
    """The earliest of the times given as text ('' for none that parse)."""
    timed = [(t, text) for text in texts if (t := _parse_time(text)) is not None]
    return min(timed)[1] if timed else ""


def _latest(texts: Iterable[str]) -> str:
    timed = [(t, text) for text in texts if (t := _parse_time(text)) is not None]
    return max(timed)[1] if timed else ""


def started_at(finished_at: str, latency_ms: int) -> str:
    """When a result's call started: its end less its latency ('' if the end is unreadable)."""
    end = _parse_time(finished_at)
    if end is None:
        return ""
    return (end - timedelta(milliseconds=latency_ms)).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class JobTiming:
    """A job's latency histogram and its first start and last result write, summed over
    its counter shards."""

    #: Counts per bucket (:data:`BUCKETS` of them) of the answered requests' latencies.
    buckets: tuple[int, ...] = field(default_factory=lambda: (0,) * BUCKETS)
    latency_sum_ms: int = 0
    #: When the first request written to a shard started its call (ISO 8601, UTC): per
    #: shard the first write's, the earliest over the shards.
    first_started_at: str = ""
    #: When a result was last written (ISO 8601, UTC), the latest over the shards.
    last_finished_at: str = ""

    def __add__(self, other: JobTiming) -> JobTiming:
        return JobTiming(
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            self.latency_sum_ms + other.latency_sum_ms,
            _earliest((self.first_started_at, other.first_started_at)),
            _latest((self.last_finished_at, other.last_finished_at)),
        )

    @classmethod
    def of_latencies(
        cls, latencies_ms: Iterable[float], *, first_started_at: str = "", last_finished_at: str = ""
    ) -> JobTiming:
        """The timing of these latencies (tests, the demo stack)."""
        counts = [0] * BUCKETS
        total = 0
        for ms in latencies_ms:
            counts[bucket_of(ms)] += 1
            total += int(ms)
        return cls(tuple(counts), total, first_started_at, last_finished_at)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> JobTiming:
        """One counter shard's timing (a shard written before these existed has none)."""
        counts = [0] * BUCKETS
        for bucket in range(BUCKETS):
            counts[bucket] = int(item.get(bucket_attribute(bucket), 0))
        return cls(
            tuple(counts),
            int(item.get(SUM_ATTRIBUTE, 0)),
            str(item.get(FIRST_STARTED, "")),
            str(item.get(LAST_FINISHED, "")),
        )

    @property
    def answered(self) -> int:
        """How many latencies the histogram holds."""
        return sum(self.buckets)

    @property
    def mean_ms(self) -> float | None:
        return self.latency_sum_ms / self.answered if self.answered else None

    def percentile_ms(self, p: float) -> float | None:
        return percentile_of(self.buckets, p)

    @property
    def active_s(self) -> float | None:
        """Seconds from the first call's start to the last result written; None before two
        ends are known."""
        start, end = _parse_time(self.first_started_at), _parse_time(self.last_finished_at)
        if start is None or end is None:
            return None
        return max(0.0, (end - start).total_seconds())


def counter_update(latencies_ms: Iterable[int], starts: Iterable[str]) -> tuple[dict[str, int], str]:
    """What one result transaction adds to its counter shard: the bucket counts and the sum
    of its answered requests' latencies (attribute name to increment, zero counts left out),
    and the earliest start among its results ('' for none). A latency of :data:`NOT_TIMED`
    is left out: the request was not timed (a batch-lane answer, imported from a native
    batch job that times no request: shared/lanes/poller.py)."""
    adds: dict[str, int] = {}
    total = 0
    for ms in latencies_ms:
        if ms <= NOT_TIMED:
            continue
        name = bucket_attribute(bucket_of(ms))
        adds[name] = adds.get(name, 0) + 1
        total += ms
    if adds:
        adds[SUM_ATTRIBUTE] = total
    return adds, _earliest(starts)
