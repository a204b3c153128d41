"""Jobs side by side inside one invocation (shared/worker/batch_run.py with
shared/limits/limiter.py): a batch whose records came a big job's first and a small job's
last, on a worker allowed two calls at once. The small job's calls go in as slots free up,
alternating with the big job's, not after all of them. Real worker, moto's DynamoDB over
HTTP, the simulator as the endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from llmbatch.local.simulator import SimulatorConfig, SimulatorThread
from shared.config import WorkerConfig
from shared.jobs import JobMeta
from shared.messages import RequestMessage
from shared.results import RequestStatus
from shared.store.result_store import ResultStore
from tests.unit.worker_harness import request_record, start_worker

pytestmark = pytest.mark.functional

CALLS_AT_ONCE = 2
BIG, SMALL = 24, 4
#: Each call takes this long (and slots to spare at the endpoint): order, not speed, is tested.
STEADY = {"jitter_s": 0.0, "base_latency_s": 0.03, "per_output_token_s": 0.0, "slots": 64}


@pytest.fixture(scope="module")
def setting() -> Iterator[tuple[str, dict[str, str]]]:
    with MotoServer() as moto, SimulatorThread(SimulatorConfig(**STEADY)) as sim:
        stack = provision_stack(
            moto.url, parameter_overrides={"EndpointUrl": sim.url, "ModelCallConcurrency": str(CALLS_AT_ONCE)}
        )
        yield moto.url, stack.functions["Worker"].environment


def record(job_id: str, n: int) -> dict[str, Any]:
    cid = f"{job_id}-{n:02d}"
    body = {"model": "m", "messages": [{"role": "user", "content": cid}], "max_tokens": 4}
    return request_record(
        RequestMessage(v=1, job_id=job_id, custom_id=cid, line=n + 1, url="/v1/chat/completions", body=body)
    )


def test_a_small_jobs_calls_do_not_wait_for_a_big_jobs_earlier_records(setting: tuple[str, dict[str, str]]) -> None:
    aws_url, env = setting
    config = WorkerConfig.from_env(env)
    loop = asyncio.new_event_loop()
    exits = AsyncExitStack()

    async def setup() -> tuple[Any, ResultStore]:
        jobs = [
            JobMeta(job_id=job, total=total, sealed=True, enqueued=total)
            for job, total in (("job-big", BIG), ("job-small", SMALL))
        ]
        return await start_worker(exits, aws_url, config, jobs)

    async def finished(job_id: str) -> list[tuple[str, str]]:
        return [
            (r.finished_at, r.custom_id)
            async for r in store.iter_results(job_id)
            if r.status is RequestStatus.SUCCEEDED
        ]

    worker, store = loop.run_until_complete(setup())
    try:
        # GIVEN one batch: the big job's records first, the small job's last
        records = [record("job-big", n) for n in range(BIG)] + [record("job-small", n) for n in range(SMALL)]

        # WHEN it runs with two calls at once
        response = worker.process({"Records": records}, FakeLambdaContext("worker", 512, 60), loop)

        # THEN every request succeeded, with two calls in flight at most
        assert response["batchItemFailures"] == []
        assert worker.limiter.max_in_use == CALLS_AT_ONCE
        big, small = loop.run_until_complete(finished("job-big")), loop.run_until_complete(finished("job-small"))
        assert (len(big), len(small)) == (BIG, SMALL)
        # and the small job's calls alternated with the big job's from the first free slot:
        # its last answer came before the big job's tenth (in arrival order, after all 24)
        order = [cid for _, cid in sorted(big + small)]
        last_small = max(order.index(cid) for _, cid in small)
        assert last_small < 2 * SMALL + CALLS_AT_ONCE, order
    finally:
        loop.run_until_complete(exits.aclose())
        loop.close()
