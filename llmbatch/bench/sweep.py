"""Throughput and p99 latency against our worker's model-call concurrency.

One container, as in the other scenarios, on the slots32 endpoint; only the limits
parameter's ``max_concurrency`` (model calls per invocation, what an operator sets live)
changes from one point to the next. Below the endpoint's slots throughput grows with the
limit and latency (which counts the wait for a slot of our limiter) falls; above them the
extra calls wait in the endpoint's queue instead of our limiter, so throughput stops growing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmbatch.bench.harness import SCENARIOS, BenchStack, OursApproach, RunResult, Scenario, run_approach
from llmbatch.bench.svg_chart import Panel, line_chart_svg

#: Doubling, to twice the endpoint's 32 slots.
CONCURRENCY = (4, 8, 16, 32, 64)
#: Requests per point: three batches, enough for a steady rate and a p99 of 300 latencies,
#: few enough for the slowest point (4 calls at a time, 20 requests/s) to take ~15 s.
REQUESTS = 300
SVG_NAME = "benchmark-concurrency.svg"


@dataclass(frozen=True)
class SweepPoint:
    concurrency: int
    run: RunResult


def sweep_scenario(concurrency: int) -> Scenario:
    base = SCENARIOS["slots32"]
    return Scenario(
        f"sweep-{concurrency}",
        f"{base.title}; ours with {concurrency} model calls per invocation",
        base.simulator,
        {**base.limits, "max_concurrency": concurrency},
    )


def run_sweep(
    stack: BenchStack,
    concurrency: Sequence[int] = CONCURRENCY,
    *,
    requests: int = REQUESTS,
    latency_s: float | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[SweepPoint]:
    points = []
    for c in concurrency:
        run = run_approach(stack, sweep_scenario(c), OursApproach, requests, latency_s=latency_s)
        log(f"concurrency {c:4}: {run.requests} requests in {run.wall_s:6.2f} s, p99 {run.p99_ms:.0f} ms")
        points.append(SweepPoint(c, run))
    return points


def sweep_chart(points: Sequence[SweepPoint]) -> str:
    """Throughput and p99 against concurrency, two panels, as SVG text."""
    return line_chart_svg(
        [p.concurrency for p in points],
        [
            Panel("Throughput", "answers stored per second", [p.run.succeeded_per_s for p in points]),
            Panel("p99 latency", "ms", [p.run.p99_ms for p in points]),
        ],
        x_label="model calls per invocation",
        title="Our worker on 32 slots, 200 ms per call: throughput and p99 latency against concurrency",
    )
