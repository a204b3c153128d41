"""A queueing model of a job's invocations on one endpoint: how much of the endpoint a job
uses, given the workers' sizing and the time an invocation takes to turn over.

Why it exists: the workers' ``HEADROOM`` (llmbatch/client/worker_sizing.py) is chosen from
it, and measured runs on a 2-core machine are too noisy to choose between close values
alone. The model has no CPU, no network and no noise; the local stack's benchmark
(``llmbatch bench --scenario local-e2e``) is what measures.

What it models, as the stack runs: ``invocations`` invocations, each takes a batch of
``batch_size`` requests and keeps ``calls`` of them in flight until the batch is done; the
endpoint serves ``slots`` calls at once for ``call_s`` (+- ``jitter_s``) each and queues the
rest in arrival order; an invocation whose batch is done takes ``turnover_s`` (its final
writes, the next gather, the start-of-batch lookup) to start its next batch. The first
invocation's calls start at ``first_s`` and the others ``stagger_s`` apart (a job's
messages arrive as submit sends them).

``python -m llmbatch.bench.turnover_model`` prints the utilisation by ``HEADROOM`` for the
benchmark's endpoint, with Lambda's turnovers and with the local stack's.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, replace

from llmbatch.client.worker_sizing import invocations_for


@dataclass(frozen=True)
class Timing:
    """How long an invocation takes to turn over, and when a job's first batches start."""

    turnover_s: float
    first_s: float
    stagger_s: float


@dataclass(frozen=True)
class Workload:
    requests: int = 2_000
    invocations: int = 4
    batch_size: int = 100
    calls: int = 16
    slots: int = 32
    call_s: float = 0.2
    jitter_s: float = 0.02
    turnover_s: float = 0.2
    first_s: float = 0.5
    stagger_s: float = 0.08

    @property
    def capacity_per_s(self) -> float:
        return self.slots / self.call_s

    def timed(self, timing: Timing) -> Workload:
        return replace(self, turnover_s=timing.turnover_s, first_s=timing.first_s, stagger_s=timing.stagger_s)


def last_result_s(w: Workload, *, seed: int = 0) -> float:
    """When the job's last request is answered, from the job's start."""
    rng = random.Random(seed)
    events: list[tuple[float, int, str, int]] = []
    order = itertools.count()
    unassigned = w.requests
    unstarted = [0] * w.invocations
    in_flight = [0] * w.invocations
    waiting: deque[int] = deque()  # the endpoint's queue: whose call
    serving = 0
    last = 0.0

    def schedule(t: float, kind: str, who: int) -> None:
        heapq.heappush(events, (t, next(order), kind, who))

    def call(t: float, who: int) -> None:
        nonlocal serving
        if serving < w.slots:
            serving += 1
            schedule(t + w.call_s + rng.uniform(-w.jitter_s, w.jitter_s), "answered", who)
        else:
            waiting.append(who)

    for i in range(w.invocations):
        schedule(w.first_s + i * w.stagger_s, "batch", i)
    while events:
        t, _, kind, who = heapq.heappop(events)
        if kind == "batch":
            take = min(w.batch_size, unassigned)
            if take == 0:
                continue
            unassigned -= take
            first = min(w.calls, take)
            unstarted[who], in_flight[who] = take - first, first
            for _ in range(first):
                call(t, who)
            continue
        last = t
        serving -= 1
        if waiting:
            serving += 1
            schedule(t + w.call_s + rng.uniform(-w.jitter_s, w.jitter_s), "answered", waiting.popleft())
        in_flight[who] -= 1
        if unstarted[who]:
            unstarted[who] -= 1
            in_flight[who] += 1
            call(t, who)
        elif in_flight[who] == 0:
            schedule(t + w.turnover_s, "batch", who)
    return last


def utilisation(w: Workload, *, seeds: int = 5) -> float:
    """The share of the endpoint's capacity the job used, from its start to its last answer
    (as the benchmark reports it), averaged over ``seeds`` draws of the calls' jitter."""
    mean_s = sum(last_result_s(w, seed=s) for s in range(seeds)) / seeds
    return w.requests / w.capacity_per_s / mean_s


def sized(w: Workload, headroom: float) -> Workload:
    """``w`` with its invocations sized as ``workers_for`` sizes them, at ``headroom``."""
    return replace(w, invocations=invocations_for(w.slots, w.calls, headroom=headroom))


#: The turnovers and starts seen in Lambda (tens of ms) and on the local stack (traced: the
#: turnovers in session 14; the starts in session 15, with the local mapping filling one batch at
#: a time, llmbatch/local/poller.py: a job's first five invocations started 0.80-1.43 s after submit).
LAMBDA = Timing(turnover_s=0.05, first_s=0.3, stagger_s=0.02)
LOCAL = Timing(turnover_s=0.24, first_s=0.8, stagger_s=0.15)


def main() -> None:
    w = Workload()
    print(
        f"utilisation of a {w.slots}-slot, {w.call_s:g} s endpoint by batches of {w.batch_size}, {w.calls} calls each"
    )
    for requests in (2_000, 20_000):
        for where, timing in (("Lambda", LAMBDA), ("local", LOCAL)):
            base = Workload(requests=requests).timed(timing)
            row = "  ".join(
                f"{h:g}x ({sized(base, h).invocations}): {utilisation(sized(base, h)):.3f}" for h in (2.0, 2.5, 3.0)
            )
            print(f"{requests:>6} requests, {where:6} turnovers: {row}")


if __name__ == "__main__":
    main()
