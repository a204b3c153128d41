"""``BedrockBatchApi`` (shared/lanes/bedrock_batch.py) with the real aiobotocore clients:
Bedrock's batch control plane on the Bedrock fake, S3 on moto's server, both over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from aiobotocore.session import get_session

from llmbatch.local.bedrock_batch_fake import BatchConfig
from llmbatch.local.bedrock_fake import FakeBedrock, RunningFake, start_bedrock_fake
from llmbatch.local.moto_server import MotoServer
from shared.endpoints.specs import BedrockSpec, parse_endpoints
from shared.errors import PermanentError
from shared.lanes.bedrock_batch import BedrockBatchApi, input_key
from shared.lanes.native import (
    TERMINAL_STATES,
    NativeOutcome,
    NativePart,
    NativeProgress,
    NativeQuotaExceededError,
    NativeRecord,
    NativeState,
)

pytestmark = pytest.mark.functional

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
BUCKET = "llmbatch-payloads-test"
ROLE = "arn:aws:iam::123456789012:role/llmbatch-BedrockBatchRole"
MIN_RECORDS = 4
#: Steps far slower than any test: jobs stay where a test put them unless it stops them.
SLOW_STEP_S = 600.0
FAST_STEP_S = 0.02
#: Bound of every wait for a job's state (a hang fails the test instead of blocking CI).
MAX_POLLS = 2000

AWS = get_session()
AWS.set_credentials("testing", "testing")


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


@dataclass
class Rig:
    fake: RunningFake
    api: BedrockBatchApi
    bedrock: Any
    s3: Any
    spec: BedrockSpec


async def rig(moto: str, config: BatchConfig, **spec: Any) -> AsyncIterator[Rig]:
    fake = await start_bedrock_fake(FakeBedrock(s3_endpoint_url=moto, batch_config=config))
    settings = {"kind": "bedrock", "region": "us-east-1", "default_model": CLAUDE, "endpoint_url": fake.url}
    endpoint = parse_endpoints(json.dumps({"claude": settings | {"batch_min_records": MIN_RECORDS} | spec}))["claude"]
    assert isinstance(endpoint, BedrockSpec)
    async with AsyncExitStack() as stack:
        bedrock = await stack.enter_async_context(
            AWS.create_client("bedrock", region_name="us-east-1", endpoint_url=fake.url)
        )
        s3 = await stack.enter_async_context(AWS.create_client("s3", region_name="us-east-1", endpoint_url=moto))
        buckets = await s3.list_buckets()
        if BUCKET not in {b["Name"] for b in buckets.get("Buckets", [])}:
            await s3.create_bucket(Bucket=BUCKET)
        api = BedrockBatchApi("claude", endpoint, bedrock=bedrock, s3=s3, bucket=BUCKET, role_arn=ROLE)
        try:
            yield Rig(fake, api, bedrock, s3, endpoint)
        finally:
            await fake.close()


@pytest.fixture
async def fast(moto: str) -> AsyncIterator[Rig]:
    async for r in rig(moto, BatchConfig(min_records=MIN_RECORDS, step_s=FAST_STEP_S)):
        yield r


@pytest.fixture
async def slow(moto: str) -> AsyncIterator[Rig]:
    async for r in rig(moto, BatchConfig(min_records=MIN_RECORDS, max_jobs=1, step_s=SLOW_STEP_S)):
        yield r


@pytest.fixture
async def stepped(moto: str) -> AsyncIterator[Rig]:
    """Jobs that move only when a test steps them, two records a step once InProgress."""
    async for r in rig(moto, BatchConfig(min_records=MIN_RECORDS, step_s=SLOW_STEP_S, records_per_step=2)):
        yield r


_job_counter = iter(range(1, 10**6))


def part_of(records: list[NativeRecord], part: int = 0) -> NativePart:
    job_id = f"job-20261201T020000Z-{next(_job_counter):08x}"
    return NativePart(
        job_id=job_id,
        endpoint="claude",
        part=part,
        input_key=f"batch/{job_id}/part-{part:05d}.jsonl",
        records=len(records),
    )


def chat(line: int, text: str, model: str | None = None) -> NativeRecord:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "max_tokens": 16}
    if model:
        body["model"] = model
    return NativeRecord(line=line, custom_id=f"req/{line}: {text[:10]}", url="/v1/chat/completions", body=body)


async def wait_for(api: BedrockBatchApi, native_id: str, states: frozenset[NativeState]) -> NativeProgress:
    for _ in range(MAX_POLLS):
        progress = await api.progress(native_id)
        if progress.state in states:
            return progress
        await asyncio.sleep(FAST_STEP_S)
    raise AssertionError(f"{native_id} never reached {sorted(states)}: last {progress}")


async def collect(api: BedrockBatchApi, native_id: str, records: list[NativeRecord]) -> dict[str, NativeOutcome]:
    outcomes = [o async for o in api.outcomes(native_id, records)]
    by_id = {o.custom_id: o for o in outcomes}
    assert len(by_id) == len(outcomes) == len(records)
    return by_id


async def test_a_part_runs_to_its_end_and_every_outcome_maps_back_to_its_custom_id(fast: Rig) -> None:
    records = [chat(n, f"question number {n}") for n in range(3, 9)]
    records[2] = chat(5, "this one is refused [[bedrock:ValidationException]]")
    part = part_of(records)

    native_id = await fast.api.start(part, records)
    progress = await wait_for(fast.api, native_id, TERMINAL_STATES)

    assert progress == NativeProgress(state=NativeState.ENDED, total=6, completed=5, failed=1)
    staged = await fast.s3.get_object(Bucket=BUCKET, Key=input_key(part))
    lines = [json.loads(x) for x in (await staged["Body"].read()).decode().splitlines()]
    assert [line["recordId"] for line in lines] == [f"{r.line:011d}" for r in records]
    assert lines[0]["modelInput"]["anthropic_version"] == "bedrock-2023-05-31"

    outcomes = await collect(fast.api, native_id, records)
    assert set(outcomes) == {r.custom_id for r in records}
    for record in records:
        got = outcomes[record.custom_id]
        assert got.line == record.line
        if record.line == 5:
            assert not got.succeeded
            assert (got.error_code, got.status_code) == ("400", 400)
            assert got.error_message is not None and got.error_message.startswith("ValidationException")
        else:
            assert got.succeeded and got.body is not None
            assert got.body["object"] == "chat.completion"
            assert got.body["choices"][0]["message"]["content"] == f"echo: question number {record.line}"
            assert got.usage.prompt_tokens == 3 and got.usage.completion_tokens == 4


async def test_titan_embeddings_come_back_as_an_openai_embeddings_list(fast: Rig) -> None:
    records = [
        NativeRecord(line=n, custom_id=f"e{n}", url="/v1/embeddings", body={"model": TITAN_EMBED, "input": f"text {n}"})
        for n in range(1, MIN_RECORDS + 1)
    ]
    native_id = await fast.api.start(part_of(records), records)
    await wait_for(fast.api, native_id, TERMINAL_STATES)
    outcomes = await collect(fast.api, native_id, records)
    for record in records:
        body = outcomes[record.custom_id].body
        assert body is not None and body["object"] == "list" and body["model"] == TITAN_EMBED
        assert len(body["data"][0]["embedding"]) == 8 and body["usage"]["prompt_tokens"] == 2


async def test_below_the_minimum_records_bedrock_refuses_the_part_for_good(fast: Rig) -> None:
    records = [chat(n, "too few") for n in range(1, MIN_RECORDS)]
    with pytest.raises(PermanentError) as refused:
        await fast.api.start(part_of(records), records)
    assert refused.value.code == "ValidationException"
    assert "minimum" in refused.value.message
    assert (await fast.bedrock.list_model_invocation_jobs())["invocationJobSummaries"] == []


async def test_a_part_naming_two_models_is_refused_before_any_call(fast: Rig) -> None:
    records = [
        chat(n, "hi", model=CLAUDE if n % 2 else "anthropic.claude-3-5-sonnet-20240620-v1:0") for n in range(1, 6)
    ]
    with pytest.raises(PermanentError, match="one model"):
        await fast.api.start(part_of(records), records)


async def test_a_full_quota_of_running_jobs_is_a_quota_error_to_try_later(slow: Rig) -> None:
    records = [chat(n, "hello") for n in range(1, MIN_RECORDS + 1)]
    first = await slow.api.start(part_of(records, 0), records)
    with pytest.raises(NativeQuotaExceededError) as full:
        await slow.api.start(part_of(records, 1), records)
    assert full.value.code == "ServiceQuotaExceededException"
    assert (await slow.api.progress(first)).state is NativeState.PENDING


async def test_starting_a_part_again_finds_the_job_it_made(slow: Rig) -> None:
    records = [chat(n, "hello") for n in range(1, MIN_RECORDS + 1)]
    part = part_of(records)
    first = await slow.api.start(part, records)
    again = await slow.api.start(part, records)
    assert again == first
    jobs = (await slow.bedrock.list_model_invocation_jobs())["invocationJobSummaries"]
    assert [j["jobArn"] for j in jobs] == [first]


async def test_cancel_stops_the_job_and_unanswered_records_are_reported_missing(slow: Rig) -> None:
    records = [chat(n, "hello") for n in range(1, MIN_RECORDS + 1)]
    native_id = await slow.api.start(part_of(records), records)

    await slow.api.cancel(native_id)
    progress = await wait_for(slow.api, native_id, TERMINAL_STATES)
    await slow.api.cancel(native_id)  # stopping a stopped job is not an error

    assert progress.state is NativeState.STOPPED
    outcomes = await collect(slow.api, native_id, records)
    assert {o.error_code for o in outcomes.values()} == {"native_missing"}


async def test_the_fake_lists_pages_and_finds_jobs_by_id_as_bedrock_does(fast: Rig) -> None:
    records = [chat(n, "hello") for n in range(1, MIN_RECORDS + 1)]
    arns = [await fast.api.start(part_of(records, n), records) for n in range(2)]
    for arn in arns:
        await wait_for(fast.api, arn, TERMINAL_STATES)

    first = await fast.bedrock.list_model_invocation_jobs(statusEquals="Completed", maxResults=1)
    second = await fast.bedrock.list_model_invocation_jobs(
        statusEquals="Completed", maxResults=1, nextToken=first["nextToken"]
    )
    assert [j["jobArn"] for j in first["invocationJobSummaries"] + second["invocationJobSummaries"]] == arns
    assert "nextToken" not in second
    assert (await fast.bedrock.list_model_invocation_jobs(statusEquals="InProgress"))["invocationJobSummaries"] == []

    by_id = await fast.bedrock.get_model_invocation_job(jobIdentifier=arns[0].rsplit("/", 1)[-1])
    assert by_id["jobArn"] == arns[0] and by_id["processedRecordCount"] == MIN_RECORDS
    with pytest.raises(fast.bedrock.exceptions.ValidationException):
        await fast.bedrock.stop_model_invocation_job(jobIdentifier=arns[0])
    with pytest.raises(fast.bedrock.exceptions.ResourceNotFoundException):
        await fast.bedrock.get_model_invocation_job(jobIdentifier="abcdefghijkl")


async def step_to(r: Rig, native_id: str, done: Any) -> None:
    """Step the fake's job once, then wait until ``done(job description)`` holds."""
    r.fake.fake.batch.step(native_id)
    for _ in range(MAX_POLLS):
        if done(await r.bedrock.get_model_invocation_job(jobIdentifier=native_id)):
            return
        await asyncio.sleep(FAST_STEP_S)
    raise AssertionError(f"{native_id} did not take its step")


async def test_a_stopped_job_gives_the_outcomes_of_the_records_it_answered(stepped: Rig) -> None:
    records = [chat(n, f"question {n}") for n in range(1, 7)]
    native_id = await stepped.api.start(part_of(records), records)
    for status in ("Validating", "Scheduled", "InProgress"):
        await step_to(stepped, native_id, lambda job, status=status: job["status"] == status)
        assert (await stepped.api.progress(native_id)).state is (
            NativeState.RUNNING if status == "InProgress" else NativeState.PENDING
        )
    await step_to(stepped, native_id, lambda job: job["processedRecordCount"] == 2)

    await stepped.api.cancel(native_id)
    progress = await wait_for(stepped.api, native_id, TERMINAL_STATES)

    assert progress == NativeProgress(state=NativeState.STOPPED, total=6, completed=2, failed=0)
    outcomes = await collect(stepped.api, native_id, records)
    assert [c for c, o in outcomes.items() if o.succeeded] == [r.custom_id for r in records[:2]]
    assert {outcomes[r.custom_id].error_code for r in records[2:]} == {"native_missing"}


class WithoutCounts:
    """The bedrock client, its GetModelInvocationJob answers stripped of the record counts
    (as from a Bedrock that reports none): the counts then come from manifest.json.out."""

    COUNTS = ("totalRecordCount", "processedRecordCount", "successRecordCount", "errorRecordCount")

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get_model_invocation_job(self, **kwargs: Any) -> dict[str, Any]:
        job = await self._client.get_model_invocation_job(**kwargs)
        return {k: v for k, v in job.items() if k not in self.COUNTS}


async def test_without_counts_in_the_job_the_manifest_gives_them(fast: Rig) -> None:
    records = [chat(n, "hello") for n in range(1, MIN_RECORDS + 1)]
    records[0] = chat(1, "[[bedrock:ThrottlingException]]")
    api = BedrockBatchApi(
        "claude", fast.spec, bedrock=WithoutCounts(fast.bedrock), s3=fast.s3, bucket=BUCKET, role_arn=ROLE
    )
    native_id = await api.start(part_of(records), records)
    progress = await wait_for(api, native_id, TERMINAL_STATES)
    assert progress == NativeProgress(state=NativeState.ENDED, total=MIN_RECORDS, completed=MIN_RECORDS - 1, failed=1)
    assert (await collect(api, native_id, records))[records[0].custom_id].status_code == 429
