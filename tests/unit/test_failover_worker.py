"""The worker's failover, invocation by invocation (shared/worker/batch_run.py with
shared/endpoints/failover.py): real endpoints built by the factory from the stack's
``Endpoints`` on two simulators, results in moto's DynamoDB. The circuit's clock is a value
the test moves, so the cool-down takes no time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import provision_stack
from llmbatch.local.simulator import SimulatorConfig, SimulatorThread
from shared.config import RuntimeLimits, WorkerConfig
from shared.endpoints.failover import DEFAULT_SETTINGS, Failover, State
from shared.jobs import JobMeta
from shared.messages import RequestMessage
from shared.results import RequestResult, RequestStatus
from shared.store.result_store import ResultStore
from tests.unit.worker_harness import request_record, start_worker

pytestmark = pytest.mark.functional

#: The fallback's own cap on inputs per call, unlike the live limits' default.
BACKUP_INPUTS_PER_CALL = 2
QUIET = {"jitter_s": 0.0, "base_latency_s": 0.01, "per_output_token_s": 0.0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def setting() -> Iterator[tuple[str, SimulatorThread, SimulatorThread, dict[str, str]]]:
    assert RuntimeLimits().max_inputs_per_call > BACKUP_INPUTS_PER_CALL * 2
    with (
        MotoServer() as moto,
        SimulatorThread(SimulatorConfig(**QUIET)) as primary,
        SimulatorThread(SimulatorConfig(**QUIET)) as backup,
    ):
        endpoints = {
            "primary": {"kind": "openai", "url": primary.url, "fallback": ["backup"]},
            "backup": {"kind": "openai", "url": backup.url, "max_inputs_per_call": BACKUP_INPUTS_PER_CALL},
        }
        stack = provision_stack(
            moto.url, parameter_overrides={"EndpointUrl": primary.url, "Endpoints": json.dumps(endpoints)}
        )
        yield moto.url, primary, backup, stack.functions["Worker"].environment


def chat(job_id: str, ids: list[str], *, receives: int = 1) -> list[dict[str, Any]]:
    return [
        record(
            job_id,
            cid,
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": cid}]},
            receives,
        )
        for cid in ids
    ]


def record(job_id: str, cid: str, route: str, body: dict[str, Any], receives: int = 1) -> dict[str, Any]:
    msg = RequestMessage(v=1, job_id=job_id, custom_id=cid, line=1, url=route, body=body, endpoint="primary")
    return request_record(msg, receives)


def test_a_failing_primary_fails_over_counts_under_the_fallback_and_comes_back(
    setting: tuple[str, SimulatorThread, SimulatorThread, dict[str, str]],
) -> None:
    aws_url, primary, backup, env = setting
    config = WorkerConfig.from_env(env)
    loop = asyncio.new_event_loop()
    exits = AsyncExitStack()
    clock = Clock()

    async def setup() -> tuple[Any, ResultStore]:
        jobs = [
            JobMeta(job_id=job, total=8, sealed=True, enqueued=8, endpoint="primary")
            for job in ("job-a", "job-b", "job-c", "job-d")
        ]
        worker, store = await start_worker(exits, aws_url, config, jobs)
        worker.failover = Failover(config.endpoints, clock=clock)
        return worker, store

    def run(records: list[dict[str, Any]]) -> list[str]:
        response = worker.process({"Records": records}, FakeLambdaContext("worker", 512, 30), loop)
        return sorted(f["itemIdentifier"] for f in response["batchItemFailures"])

    async def results(job_id: str) -> dict[str, RequestResult]:
        return {r.custom_id: r async for r in store.iter_results(job_id)}

    worker, store = loop.run_until_complete(setup())
    try:
        # GIVEN a primary that answers every call with a 5xx
        primary.update_config(error_rate_5xx=1.0)
        first = chat("job-a", [f"a{i}" for i in range(DEFAULT_SETTINGS.min_calls + 1)])
        # WHEN a batch runs: its requests fail on the primary, transiently, and go back to SQS
        assert run(first) == sorted(r["messageId"] for r in first)
        assert worker.failover.states()["primary"] is State.OPEN
        assert worker.last_stats.by_endpoint["primary"].calls == len(first)
        assert loop.run_until_complete(results("job-a")) == {}

        # WHEN they come back: they go to the fallback, each called once, and succeed
        again = chat("job-a", [f"a{i}" for i in range(len(first))], receives=2)
        assert run(again) == []
        done = loop.run_until_complete(results("job-a"))
        assert {c: (r.status, r.endpoint, r.attempt) for c, r in done.items()} == {
            f"a{i}": (RequestStatus.SUCCEEDED, "backup", 2) for i in range(len(first))
        }
        assert backup.stats()["calls_by_custom_id"] == {f"a{i}": 1 for i in range(len(first))}
        # ... counted under the fallback, where the calls went
        stats = worker.last_stats.by_endpoint
        n = len(first)
        assert (stats["backup"].calls, stats["backup"].succeeded, len(stats["backup"].latencies_ms)) == (n, n, n)
        assert "primary" not in stats

        # WHEN single embeddings go to the fallback: packed to its own cap, not the live one
        before = backup.stats()["requests_total"]
        embeddings = [
            record("job-b", f"e{i}", "/v1/embeddings", {"model": "e", "input": f"text {i}"})
            for i in range(BACKUP_INPUTS_PER_CALL * 2)
        ]
        assert run(embeddings) == []
        assert backup.stats()["requests_total"] - before == 2
        assert {r.endpoint for r in loop.run_until_complete(results("job-b")).values()} == {"backup"}

        # GIVEN the primary recovered and the cool-down over
        primary.update_config(error_rate_5xx=0.0)
        clock.now += worker.failover.breaker("primary").open_for_s()
        # WHEN a batch runs: one request probes the primary, the others still go to the fallback
        assert run(chat("job-c", ["c0", "c1", "c2"])) == []
        by = [r.endpoint for r in loop.run_until_complete(results("job-c")).values()]
        assert sorted(by) == ["backup", "backup", "primary"]
        assert worker.failover.states()["primary"] is State.CLOSED
        # ... and after the probe's success, every request goes to the primary again
        assert run(chat("job-d", ["d0", "d1", "d2"])) == []
        assert {r.endpoint for r in loop.run_until_complete(results("job-d")).values()} == {"primary"}
    finally:
        loop.run_until_complete(exits.aclose())
        loop.close()


def test_a_permanent_failure_is_recorded_on_the_primary_without_failing_over(
    setting: tuple[str, SimulatorThread, SimulatorThread, dict[str, str]],
) -> None:
    aws_url, primary, backup, env = setting
    primary.update_config(error_rate_5xx=0.0)
    config = WorkerConfig.from_env(env)
    loop = asyncio.new_event_loop()
    exits = AsyncExitStack()

    async def setup() -> tuple[Any, ResultStore]:
        job = JobMeta(job_id="job-p", total=8, sealed=True, enqueued=8, endpoint="primary")
        return await start_worker(exits, aws_url, config, [job])

    worker, store = loop.run_until_complete(setup())
    try:
        backup_before = backup.stats()["requests_total"]
        # GIVEN requests the primary refuses (a 400: the simulator's marker)
        ids = [f"p{i}" for i in range(DEFAULT_SETTINGS.min_calls + 1)]
        records = [
            record(
                "job-p",
                cid,
                "/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "[[sim:400]]"}]},
            )
            for cid in ids
        ]
        # WHEN they run
        assert (
            worker.process({"Records": records}, FakeLambdaContext("worker", 512, 30), loop)["batchItemFailures"] == []
        )

        async def results() -> list[RequestResult]:
            return [r async for r in store.iter_results("job-p")]

        # THEN each is recorded failed, on the primary, and the fallback was never called
        assert {(r.status, r.endpoint, r.status_code) for r in loop.run_until_complete(results())} == {
            (RequestStatus.FAILED, "primary", 400)
        }
        assert worker.failover.breaker("primary").state is State.CLOSED
        assert backup.stats()["requests_total"] == backup_before
    finally:
        loop.run_until_complete(exits.aclose())
        loop.close()
