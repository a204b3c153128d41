"""Latency and throughput figures (the demo's summary and the benchmark's)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


@dataclass(frozen=True)
class RunSummary:
    requests: int
    succeeded: int
    failed: int
    wall_s: float
    latencies_ms: tuple[float, ...]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mean_ms(self) -> float:
        return sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    def lines(self) -> list[str]:
        return [
            f"requests     {self.requests}",
            f"succeeded    {self.succeeded}",
            f"failed       {self.failed}",
            f"wall time    {self.wall_s:.1f} s",
            f"throughput   {self.requests_per_s:.1f} requests/s",
            f"latency      mean {self.mean_ms:.0f} ms, p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms per request",
        ]
