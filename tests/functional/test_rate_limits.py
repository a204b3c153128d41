"""Global rate limits: the DynamoDB bucket (shared/limits/rate_bucket.py) shared by several
containers at once, the lease pool in front of it (shared/limits/throttle.py), and the worker
keeping an endpoint's RPM limit and its Retry-After. Against moto's server over real HTTP
and the simulator; every assertion counts, none times."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import REGION, provision_stack
from llmbatch.local.simulator import SimulatorConfig, SimulatorThread
from shared.config import RuntimeLimits, WorkerConfig
from shared.endpoints.openai_http import OpenAIHttpEndpoint
from shared.jobs import JobMeta
from shared.limits.rate_bucket import DynamoRateBucket, bucket_key
from shared.limits.rate_math import REQUESTS_ATTR, RateLimits
from shared.limits.throttle import Throttle
from shared.messages import RequestMessage
from shared.results import Usage
from shared.store.item_size import from_ddb
from shared.store.result_store import ResultStore
from shared.worker.processor import Worker

pytestmark = pytest.mark.functional

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


@dataclass(frozen=True)
class Aws:
    url: str
    env: dict[str, str]

    @property
    def jobs_table(self) -> str:
        return self.env["JOBS_TABLE"]


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    with MotoServer() as server:
        yield Aws(server.url, dict(provision_stack(server.url).functions["Worker"].environment))


def ddb_client(aws: Aws) -> Any:
    return get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=aws.url, aws_access_key_id="t", aws_secret_access_key="t"
    )


@pytest.fixture
async def ddb(aws: Aws) -> AsyncIterator[Any]:
    async with ddb_client(aws) as client:
        yield client


def endpoint_name() -> str:
    return f"ep-{uuid.uuid4().hex[:8]}"


# ---- the bucket, shared -------------------------------------------------------------------


async def test_containers_sharing_a_bucket_never_get_more_than_the_limit_between_them(aws: Aws) -> None:
    # GIVEN four containers, each with its own DynamoDB client and bucket object, and an
    # endpoint allowed 1,200 requests a minute (20 a second)
    rpm, containers, calls_each = 1200, 4, 15
    limits = RuntimeLimits(rpm_limit=rpm)
    endpoint = endpoint_name()
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(ddb_client(aws)) for _ in range(containers)]
        buckets = [DynamoRateBucket(c, aws.jobs_table) for c in clients]
        throttles = [Throttle(b) for b in buckets]

        async def invocation(throttle: Throttle) -> int:
            left = [calls_each]

            async def one() -> None:
                await throttle.permit(
                    endpoint, "/v1/chat/completions", CHAT, runtime=limits, wanted=lambda: left[0], max_wait_s=60
                )
                left[0] -= 1

            await asyncio.gather(*(one() for _ in range(calls_each)))
            return calls_each

        # WHEN each runs an invocation of 15 calls at once, all four together
        started = time.time()
        granted = sum(await asyncio.gather(*(invocation(t) for t in throttles)))
        ended = time.time()
        item = await clients[0].get_item(TableName=aws.jobs_table, Key=bucket_key(endpoint), ConsistentRead=True)

    # THEN every call got its permit, and between them no more than the limit allows in the
    # time they took: the bucket starts empty, so the rate times the time is the bound (four
    # per-container limiters would have let all 60 through in well under a second)
    assert granted == containers * calls_each
    assert granted <= rpm / 60 * (ended - started)
    # The stored bucket agrees: it has been spent up to at most now.
    assert int(from_ddb(item["Item"])[REQUESTS_ATTR]) <= int(ended * 1_000_000)
    # And calls were taken in leases, not one write each.
    writes = sum(b.calls["update_item"] for b in buckets)
    assert writes < granted


async def test_leases_grow_so_one_container_writes_a_few_times_for_many_calls(aws: Aws, ddb: Any) -> None:
    bucket = DynamoRateBucket(ddb, aws.jobs_table)
    throttle = Throttle(bucket)
    limits = RuntimeLimits(rpm_limit=6000)  # 100 a second: leases of up to 50
    endpoint = endpoint_name()
    left = [100]

    async def one() -> None:
        await throttle.permit(
            endpoint, "/v1/embeddings", {"input": "x"}, runtime=limits, wanted=lambda: left[0], max_wait_s=60
        )
        left[0] -= 1

    await asyncio.gather(*(one() for _ in range(100)))
    # One read of the bucket, one write creating it, and leases of 1, 2, 4, 8, 16, 32, 37.
    assert bucket.calls == {"get_item": 1, "update_item": 1 + 7}


async def test_a_usage_below_the_estimate_is_credited_to_the_next_calls(aws: Aws, ddb: Any) -> None:
    bucket = DynamoRateBucket(ddb, aws.jobs_table)
    throttle = Throttle(bucket)
    limits = RuntimeLimits(tpm_limit=600_000)  # 10,000 tokens a second
    endpoint = endpoint_name()
    body = {"messages": [{"role": "user", "content": "x" * 4000}], "max_tokens": 2000}  # ~3,000 tokens

    permit = await throttle.permit(
        endpoint, "/v1/chat/completions", body, runtime=limits, wanted=lambda: 1, max_wait_s=30
    )
    writes = bucket.calls["update_item"]
    # The endpoint counted 200 prompt tokens, not the 1,001 estimated: 801 come back.
    throttle.settle(permit, Usage(prompt_tokens=200, completion_tokens=5))
    small = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 600}  # 701 tokens
    await throttle.permit(endpoint, "/v1/chat/completions", small, runtime=limits, wanted=lambda: 1, max_wait_s=30)
    # paid from the credit: no lease, no write
    assert bucket.calls["update_item"] == writes


async def test_limits_that_are_not_set_cost_no_aws_call(aws: Aws, ddb: Any) -> None:
    bucket = DynamoRateBucket(ddb, aws.jobs_table)
    throttle = Throttle(bucket)
    for _ in range(5):
        await throttle.permit(
            endpoint_name(), "/v1/embeddings", {"input": "x"}, runtime=RuntimeLimits(), wanted=lambda: 1, max_wait_s=1
        )
    assert not bucket.calls


def test_an_endpoints_own_limits_override_the_live_ones_field_by_field() -> None:
    throttle = Throttle(None, overrides={"big": RateLimits(rpm=10_000)})
    live = RuntimeLimits(rpm_limit=100, tpm_limit=5000)
    assert throttle.limits_for("big", live) == RateLimits(rpm=10_000, tpm=5000)
    assert throttle.limits_for("other", live) == RateLimits(rpm=100, tpm=5000)


async def test_the_bucket_is_not_a_job(aws: Aws, ddb: Any) -> None:
    store = ResultStore(ddb, jobs_table=aws.jobs_table, results_table=aws.env["RESULTS_TABLE"])
    await Throttle(DynamoRateBucket(ddb, aws.jobs_table)).permit(
        "listed", "/v1/embeddings", {"input": "x"}, runtime=RuntimeLimits(rpm_limit=600), wanted=lambda: 1, max_wait_s=5
    )
    assert all(not j.meta.job_id.startswith("ratelimit#") for j in await store.list_jobs())


# ---- the worker ---------------------------------------------------------------------------


def records_for(job_id: str, texts: list[str]) -> list[dict[str, Any]]:
    return [
        sqs_record(
            {
                "MessageId": f"m{i}",
                "ReceiptHandle": f"h{i}",
                "Body": RequestMessage(
                    v=1,
                    job_id=job_id,
                    custom_id=f"c{i}",
                    line=i + 1,
                    url="/v1/chat/completions",
                    body={"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 4},
                ).encode(),
            },
            "arn:aws:sqs:us-east-1:1:q",
        )
        for i, text in enumerate(texts)
    ]


def run_batch(
    aws: Aws, sim_url: str, limits: RuntimeLimits, texts: list[str], *, timeout_s: float = 60
) -> tuple[Worker, dict[str, Any]]:
    """One invocation of a worker built as a container builds it, on its own loop."""
    config = WorkerConfig.from_env({**aws.env, "ENDPOINT_URL": sim_url, "MIN_CALL_S": "0.1", "WRITE_RESERVE_S": "1"})
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()

    async def setup() -> Worker:
        ddb = await stack.enter_async_context(ddb_client(aws))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        store = ResultStore(ddb, jobs_table=config.jobs_table, results_table=config.results_table)
        await store.create_job(JobMeta(job_id=job_id, total=len(texts), sealed=True, enqueued=len(texts)))
        return Worker(
            config,
            store,
            {"default": OpenAIHttpEndpoint("default", http, sim_url)},
            limits=lambda: limits,
            throttle=Throttle(DynamoRateBucket(ddb, config.jobs_table)),
        )

    job_id = f"job-rl-{uuid.uuid4().hex[:10]}"
    try:
        worker = loop.run_until_complete(setup())
        event = {"Records": records_for(job_id, texts)}
        response = dict(worker.process(event, FakeLambdaContext("worker", 512, timeout_s), loop))
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
    return worker, response


def test_the_worker_keeps_the_endpoints_rpm_limit_instead_of_collecting_429s(aws: Aws) -> None:
    # GIVEN an endpoint that allows 600 requests a minute, its own bucket empty (steady state:
    # made at a limit of 1, then raised), and a worker told the same limit, 16 calls at once
    rpm, n = 600, 24
    with SimulatorThread(SimulatorConfig(slots=16, base_latency_s=0.01, jitter_s=0.0, rpm_limit=1)) as sim:
        sim.update_config(rpm_limit=rpm)
        # WHEN a batch of 24 runs
        worker, response = run_batch(aws, sim.url, RuntimeLimits(max_concurrency=16, rpm_limit=rpm), ["hi"] * n)
        stats = sim.stats()
    # THEN every request was answered at the first try, none refused with a 429 (the
    # endpoint alone would have refused most of a 16-call burst)
    assert response["batchItemFailures"] == []
    assert worker.last_stats.succeeded == n
    assert stats["rate_limited_429"] == 0 and stats["requests_total"] == n
    # the calls waited for the limit instead, and it cost a few writes, not one per call
    assert worker.last_stats.rate_limited_calls > 0
    assert worker.throttle.bucket is not None
    assert worker.throttle.bucket.calls["update_item"] < n / 2


def test_records_the_limit_cannot_serve_before_the_deadline_go_back_to_sqs_uncalled(aws: Aws) -> None:
    # GIVEN an endpoint allowed one request a second and an invocation with 3 s to call it
    with SimulatorThread(SimulatorConfig(slots=4, base_latency_s=0.01, jitter_s=0.0)) as sim:
        # WHEN a batch of 6 runs
        worker, response = run_batch(aws, sim.url, RuntimeLimits(rpm_limit=60), ["hi"] * 6, timeout_s=4)
        stats = sim.stats()
    # THEN the bucket let at most 3 through (one a second), the rest waited as long as the
    # deadline allowed and went back to SQS without reaching the endpoint
    returned = len(response["batchItemFailures"])
    assert 1 <= worker.last_stats.succeeded <= 3
    assert worker.last_stats.succeeded + returned == 6
    assert stats["requests_total"] == worker.last_stats.succeeded
    assert stats["rate_limited_429"] == 0


def test_a_429_pauses_the_endpoint_for_its_retry_after_and_shrinks_adaptive_concurrency(aws: Aws) -> None:
    # GIVEN an endpoint that refuses the first call with 429 and Retry-After 2 s
    config = SimulatorConfig(slots=4, base_latency_s=0.01, jitter_s=0.0, retry_after_s=2.0)
    limits = RuntimeLimits(max_concurrency=1, adaptive_concurrency=True)
    with SimulatorThread(config) as sim:
        # WHEN a batch runs one call at a time, the refused one first
        worker, response = run_batch(aws, sim.url, limits, ["[[sim:fail-first-1:429]]", "a", "b", "c"])
        stats = sim.stats()
    # THEN the refused request goes back to SQS, the next call waited out the Retry-After,
    # and the 429 was counted
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ["m0"]
    assert worker.last_stats.throttled == 1 == stats["rate_limited_429"]
    assert worker.last_stats.rate_limited_calls >= 1
    assert worker.last_stats.succeeded == 3


def test_adaptive_concurrency_backs_off_on_a_429(aws: Aws) -> None:
    config = SimulatorConfig(slots=4, base_latency_s=0.01, jitter_s=0.0, retry_after_s=0.1)
    limits = RuntimeLimits(max_concurrency=64, adaptive_concurrency=True)
    with SimulatorThread(config) as sim:
        worker, _ = run_batch(aws, sim.url, limits, ["[[sim:fail-first-1:429]]"])
    # It starts low (4) whatever the ceiling, and a 429 takes a quarter off.
    assert worker.last_stats.concurrency_limit == 3
