"""Our worker in several containers at once, as Lambda runs it.

The other scenarios invoke one container, one batch after another, so every batch's setup,
last partial wave of calls and final writes leave the endpoint's slots idle. In AWS the event
source mapping runs up to ``WorkerMaxConcurrency`` invocations at once, so one container's
gaps overlap another's calls. Here each container is a process of its own
(``llmbatch.local.lambda_runtime.ContainerProcess``, as the local stack's poller makes them),
and each takes the next batch as soon as it is free, as the mapping's pollers keep every
container busy while the queue has a backlog.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmbatch.bench.harness import (
    BASE_SIMULATOR,
    SCENARIOS,
    BatchOutcome,
    BenchStack,
    Invocation,
    RunResult,
    Scenario,
    run_approach,
)
from llmbatch.bench.procs import cpu_seconds
from llmbatch.local.lambda_runtime import ContainerProcess

HANDLER = "llmbatch.bench.worker_entry.handler"
#: Containers at once: the fewest that overlap.
CONTAINERS = 2
#: The bigger BatchSize (the stack's ``BatchSize`` parameter) compared with the template's: fewer,
#: longer invocations, so each batch's last, partial wave of calls weighs less.
BIG_BATCH = 400


def default_per_container(own: int, containers: int) -> tuple[int, ...]:
    """Model calls per invocation of each container to compare: the function's own setting
    (what the event source mapping runs, each container alike), and the endpoint's slots
    shared among the containers (together, no more calls than it has slots)."""
    share = max(1, int(BASE_SIMULATOR["slots"]) // containers)
    return (own, share) if share != own else (own,)


class ParallelContainers:
    """Our worker in ``containers`` processes, fed from one queue of events."""

    def __init__(self, stack: BenchStack, containers: int = CONTAINERS) -> None:
        assert stack.worker is not None
        function = dataclasses.replace(stack.worker, handler=HANDLER)
        self.name = f"ours x{containers}"
        self.containers = containers
        self.concurrency_limit: int | None = None
        self._timeout_s = float(function.timeout_s)
        self._procs: list[ContainerProcess] = []
        try:
            self._procs = [ContainerProcess(function, stack.aws_url) for _ in range(containers)]
            for proc in self._procs:
                proc.wait_ready()
        except BaseException:
            self.close()
            raise
        #: Each container's AWS calls so far (as its last invocation reported them).
        self._calls: list[dict[str, dict[str, int]]] = [{} for _ in self._procs]

    def handle(self, event: dict[str, Any]) -> BatchOutcome:
        (invocation,) = self.handle_all([event])
        return invocation.outcome

    def handle_all(self, events: list[dict[str, Any]]) -> list[Invocation]:
        pending: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        for event in events:
            pending.put(event)
        done: list[Invocation] = []
        failures: list[str] = []
        lock = threading.Lock()

        def serve(i: int) -> None:
            while not failures:
                try:
                    event = pending.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                kind, payload = self._procs[i].invoke(event, self._timeout_s)
                ended = time.perf_counter()
                with lock:
                    if kind != "ok":
                        failures.append(f"container {i}: {kind} {payload.get('message', '')}".strip())
                        return
                    result = payload["result"]
                    done.append(Invocation(i, started, ended, result["outcome"]))
                    self._calls[i] = result["aws_calls"]
                    self.concurrency_limit = result["concurrency_limit"]

        threads = [threading.Thread(target=serve, args=(i,), name=f"bench-poller-{i}") for i in range(len(self._procs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise RuntimeError("; ".join(failures))
        return done

    def aws_calls(self) -> dict[str, Counter[str]]:
        total: dict[str, Counter[str]] = {}
        for calls in self._calls:
            for service, ops in calls.items():
                total.setdefault(service, Counter()).update(ops)
        return total

    def cpu_s(self) -> float:
        return sum(cpu_seconds(p.process.pid) or 0.0 for p in self._procs if p.process.pid is not None)

    def close(self) -> None:
        for proc in self._procs:
            proc.stop()


@dataclass(frozen=True)
class ParallelRun:
    containers: int
    #: Model calls per invocation of each container.
    per_container: int
    run: RunResult
    #: Records per invocation (the event source mapping's BatchSize).
    batch_size: int


def parallel_scenario(containers: int, per_container: int, batch_size: int) -> Scenario:
    base = SCENARIOS["slots32"]
    return Scenario(
        f"slots32x{containers}-{per_container}-b{batch_size}",
        f"{base.title}; ours in {containers} containers at once, {per_container} model calls each, "
        f"batches of {batch_size}",
        base.simulator,
        {**base.limits, "max_concurrency": per_container},
    )


def run_parallel(
    stack: BenchStack,
    per_container: Sequence[int],
    *,
    containers: int = CONTAINERS,
    requests: int,
    batch_size: int | None = None,
    latency_s: float | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[ParallelRun]:
    """Each of ``per_container`` in turn; ``batch_size`` in place of the template's BatchSize."""
    runs = []
    template_batch = stack.batch_size
    stack.batch_size = batch_size or template_batch
    try:
        for limit in per_container:
            scenario = parallel_scenario(containers, limit, stack.batch_size)
            result = run_approach(
                stack, scenario, lambda s: ParallelContainers(s, containers), requests, latency_s=latency_s
            )
            log(
                f"{containers} containers x {limit:3} calls, batches of {stack.batch_size}: {result.requests} "
                f"requests in {result.wall_s:6.2f} s, endpoint util {result.utilisation:.2f}"
            )
            runs.append(ParallelRun(containers, limit, result, stack.batch_size))
    finally:
        stack.batch_size = template_batch
    return runs
