"""Fairness between jobs, measured (issue 14): a small job submitted behind a big one, on the
local stack as a user runs it (``llmbatch/bench/e2e.py``'s ``local up``).

First the small job alone (the stack warm, the queue empty): its time from the start of its
submit to its last result. Then the big job is submitted whole, the small one right after
it, and the same time is taken for the small job, along with how much of the big job was
answered by then. The big job is then cancelled (its remaining requests end ``cancelled``
without a call), so the run is bounded. The queue serves a job with few messages in flight
before one with a backlog (SQS fair queues, by ``MessageGroupId`` = job id; the local stack's
queue does the same: ``llmbatch/local/moto_sqs.py``), so the small job should take about
its time alone, not the big job's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmbatch.bench.e2e import LIMITS_SETTLE_S, LocalUp, finished_times, sim_prepare, write_job
from llmbatch.bench.harness import BASE_SIMULATOR
from llmbatch.local.provision import DEFAULT_TEMPLATE
from llmbatch.local.template import load_template, parameter_values

#: The big job: about 20 s of the endpoint's capacity (160 requests/s), far more than the
#: workers hold in flight (WorkerMaxConcurrency x BatchSize).
BIG = 3_000
#: The small job: an evaluation run's size.
SMALL = 20
#: Longest the small job may take before the run is called stuck.
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class FairnessRun:
    #: The most model calls the workers may have in flight: MaximumConcurrency x ModelCallConcurrency.
    calls_in_flight: int
    #: How the worker's MaximumConcurrency was set: ``sized to the endpoint`` (auto_workers) or
    #: ``WorkerMaxConcurrency`` (the template's, not sized).
    workers_by: str
    big: int
    small: int
    #: Start of the small job's submit to its last result, alone and behind the big job.
    small_alone_s: float
    small_behind_s: float
    #: The big job's requests answered when the small job's last result was stored.
    big_answered: int
    #: Seconds from the big job's submit start to the small job's submit start.
    small_submitted_after_s: float

    @property
    def slowdown(self) -> float:
        """The small job's time behind the big one over its time alone (target: within 2x)."""
        return self.small_behind_s / self.small_alone_s if self.small_alone_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "slowdown": self.slowdown}


async def _timed_job(resources: Any, path: Any, name: str) -> tuple[str, float]:
    """Submit ``path`` (the CLI's code) and return the job id and the wall clock it started at."""
    from llmbatch.cli import commands

    started = time.time()
    job_id = await commands.submit(resources, path, name=name, endpoint="default")
    return job_id, started


async def _wait(client: Any, job_id: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not (await client.status(job_id)).finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.25)


#: The first run's workers: sized by the stack to the endpoint's declared slots (the default).
SIZED = "sized to the endpoint"
#: The second's: the template's WorkerMaxConcurrency, set by an operator (not sized).
TEMPLATE = "WorkerMaxConcurrency"


async def _run(up: LocalUp, state: Mapping[str, Any], big: int, small: int, *, workers: int | None) -> FairnessRun:
    """One run; ``workers`` None: as the stack sizes them (``auto_workers``, its default)."""
    from llmbatch.client.client import LlmbatchClient
    from llmbatch.client.stack import StackResources

    resources = StackResources(**state)
    sim_prepare(str(state["model_endpoint_url"]), None)
    small_path = write_job(up.dir / "fair-small.jsonl", small)
    big_path = write_job(up.dir / "fair-big.jsonl", big)
    async with LlmbatchClient(resources) as client:
        if workers is not None:
            await client.set_worker_concurrency(workers)  # an operator's number: auto_workers off
        elif await client.size_workers() is None:  # what the first submit would do
            raise RuntimeError("the local stack's endpoint declares no capacity to size the workers to")
        await asyncio.sleep(LIMITS_SETTLE_S)  # the mapping's settings are re-read every few seconds
        limits = await client.get_limits()
        concurrency = await client.get_worker_concurrency()
        # Alone, twice: the first warms the containers (their cold starts are not the question).
        for _ in range(2):
            alone_id, alone_start = await _timed_job(resources, small_path, "fair-small-alone")
            await _wait(client, alone_id)
        small_alone_s = max(await finished_times(client, resources.results_table, alone_id)) - alone_start
        # Behind the big job, enqueued whole.
        big_id, big_start = await _timed_job(resources, big_path, "fair-big")
        small_id, small_start = await _timed_job(resources, small_path, "fair-small")
        await _wait(client, small_id)
        small_last = max(await finished_times(client, resources.results_table, small_id))
        big_times = await finished_times(client, resources.results_table, big_id)
        await client.cancel(big_id)
        await _wait(client, big_id)
    return FairnessRun(
        calls_in_flight=(concurrency or 0) * limits.max_concurrency,
        workers_by=TEMPLATE if workers is not None else SIZED,
        big=big,
        small=small,
        small_alone_s=small_alone_s,
        small_behind_s=small_last - small_start,
        big_answered=sum(1 for t in big_times if t <= small_last),
        small_submitted_after_s=small_start - big_start,
    )


def run_fairness(
    big: int = BIG, small: int = SMALL, *, log: Callable[[str], None] = lambda _: None
) -> list[FairnessRun]:
    """With the workers the stack sizes to the endpoint's 32 slots (5 invocations x 16 calls),
    then with the template's WorkerMaxConcurrency set by hand (10 x 16: 160 calls in flight at
    most, five times the slots)."""
    runs = []
    slots = int(BASE_SIMULATOR["slots"])
    template_workers = int(parameter_values(load_template(DEFAULT_TEMPLATE))["WorkerMaxConcurrency"])
    with LocalUp(slots) as up:
        state = up.start()
        for workers in (None, template_workers):
            run = asyncio.run(_run(up, state, big, small, workers=workers))
            log(
                f"fairness, workers {run.workers_by}, {run.calls_in_flight} calls in flight at most: "
                f"{small} requests alone "
                f"{run.small_alone_s:.1f} s, "
                f"behind {big} requests {run.small_behind_s:.1f} s ({run.slowdown:.2f}x), "
                f"{run.big_answered} of the big job answered by then"
            )
            runs.append(run)
    return runs
