"""Where our worker's container time goes in a run, to explain its endpoint utilisation.

Each container's time is split into the worker's three phases per invocation
(``InvocationStats.phases_s``: prepare, running the records, finishing the writes), the rest
of each invocation (the handler around the worker, and here the hand-over to and from the
container process), and the time no invocation ran in it. While running records, the
endpoint's busy slot-seconds divided by that phase's seconds is how many of the container's
calls were, on average, being served. Placing each invocation's phases on its span (its
start and end as the benchmark saw them) gives the wall time when no container was running
records, when the endpoint had nothing of ours to serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmbatch.bench.harness import RunResult


@dataclass(frozen=True)
class TimeBudget:
    containers: int
    wall_s: float
    prepare_s: float
    records_s: float
    finish_s: float
    #: In an invocation, outside the worker's phases.
    outside_s: float
    #: No invocation running in the container.
    idle_s: float
    #: The simulator's busy slot-seconds and calls over the run, and its slots.
    endpoint_busy_s: float
    endpoint_calls: int
    slots: int
    records_per_invocation: float
    #: Model calls per invocation allowed (at the end of the run).
    limit: int | None
    #: Wall seconds when no container was running records.
    none_running_s: float
    invocations: int
    #: Mean seconds from an invocation's end to the nearest end of another container's
    #: (None with one container): near 0, the containers run in step.
    ends_apart_s: float | None

    @property
    def container_s(self) -> float:
        return self.containers * self.wall_s

    def share(self, seconds: float) -> float:
        return seconds / self.container_s if self.container_s else 0.0

    @property
    def mean_call_s(self) -> float:
        """The endpoint's mean time per call (its busy slot-seconds over its calls)."""
        return self.endpoint_busy_s / self.endpoint_calls if self.endpoint_calls else 0.0

    @property
    def lanes(self) -> float:
        """Calls a container may have served at once: its limit, or its share of the slots."""
        return min(self.limit or self.slots, self.slots / self.containers)

    @property
    def least_records_s(self) -> float:
        """The shortest a records phase could be: its records' calls back to back on its lanes."""
        return self.records_per_invocation * self.mean_call_s / self.lanes if self.lanes else 0.0

    @property
    def waves(self) -> int:
        """Rounds of calls a batch's records take on its lanes, all starting together."""
        return math.ceil(self.records_per_invocation / self.lanes) if self.lanes else 0

    @property
    def whole_waves_s(self) -> float:
        """A records phase in whole waves: the last, partial one lasts a call like the others."""
        return self.waves * self.mean_call_s

    @property
    def served_while_running(self) -> float:
        """Calls being served at the endpoint, on average, per container running records."""
        return self.endpoint_busy_s / self.records_s if self.records_s else 0.0


def covered_s(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of the intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def ends_apart_s(spans: list[tuple[int, float, float]]) -> float | None:
    gaps = [
        min(abs(end - other_end) for c2, _, other_end in spans if c2 != c)
        for c, _, end in spans
        if any(c2 != c for c2, _, _ in spans)
    ]
    return sum(gaps) / len(gaps) if gaps else None


def time_budget(run: RunResult) -> TimeBudget | None:
    """None for a run without our worker's phases (the baselines)."""
    phases = run.outcome.phases_s
    if not phases or len(phases) != len(run.spans):
        return None
    prepare, records, finish = (sum(p[i] for p in phases) for i in range(3))
    in_invocations = sum(end - start for _, start, end in run.spans)
    running = [(start + p[0], start + p[0] + p[1]) for (_, start, _), p in zip(run.spans, phases, strict=True)]
    return TimeBudget(
        containers=run.containers,
        wall_s=run.wall_s,
        prepare_s=prepare,
        records_s=records,
        finish_s=finish,
        outside_s=max(0.0, in_invocations - prepare - records - finish),
        idle_s=max(0.0, run.containers * run.wall_s - in_invocations),
        endpoint_busy_s=float(run.sim.get("busy_slot_seconds", 0.0)),
        endpoint_calls=run.endpoint_calls,
        slots=int(run.sim.get("slots", 0)),
        records_per_invocation=run.requests / len(phases),
        limit=run.concurrency_limit,
        none_running_s=max(0.0, run.wall_s - covered_s(running)),
        invocations=len(phases),
        ends_apart_s=ends_apart_s(run.spans) if run.containers > 1 else None,
    )
