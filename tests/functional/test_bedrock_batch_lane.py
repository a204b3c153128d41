"""The batch lane on a ``bedrock`` endpoint, end to end on the local stack: ``submit --lane
batch`` stages the job in parts, the LanePoller function (run on its schedule, as the
template says) starts a model invocation job per part on the Bedrock fake's control plane
with the stack's BedrockBatchRole, within the endpoint's quota of running jobs; the fake's
jobs read their input from and write their output to moto's S3; the poller imports the
outcomes in input order. A record Bedrock failed carries its error and `retry` runs it
online; cancel stops the native jobs; ``auto`` chooses at the minimum records.

The fake's jobs move only when the test steps them (``step_batch_job``) while it checks what
``status`` shows, so nothing depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbatch.cli.commands import figure_lines
from llmbatch.client.client import LlmbatchClient
from llmbatch.client.lanes import Lane, LaneRefusedError
from llmbatch.local.bedrock_batch_fake import BatchConfig
from llmbatch.local.bedrock_fake import BedrockFakeThread, FakeBedrock
from llmbatch.local.runner import LocalStack
from shared.jobs import JobState, JobStatus
from shared.results import RequestStatus
from tests.functional.conftest import FAST_RETRIES, wait_finished, write_jobfile

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
#: Nothing listens here: the stack's "default" endpoint is never called in this module.
UNUSED_URL = "http://127.0.0.1:9/v1"
MIN_RECORDS = 3
MAX_RECORDS = 4
MAX_JOBS = 2
#: A step so slow that a job moves only when the test steps it.
FROZEN_STEP_S = 600.0
FAST_STEP_S = 0.05
#: Bound of every wait (a hang fails the test instead of blocking CI).
TIMEOUT_S = 120.0
#: Statuses a job moves through before it answers records (Submitted → ... → InProgress).
STEPS_TO_RUN = 3


@pytest.fixture(scope="module")
def fake() -> Iterator[BedrockFakeThread]:
    config = BatchConfig(
        min_records=MIN_RECORDS, max_records=MAX_RECORDS, max_jobs=MAX_JOBS, step_s=FROZEN_STEP_S, records_per_step=1
    )
    with BedrockFakeThread(FakeBedrock(batch_config=config)) as running:
        yield running


@pytest.fixture(scope="module")
def stack(fake: BedrockFakeThread) -> Iterator[LocalStack]:
    settings = {
        "kind": "bedrock",
        "region": "us-east-1",
        "default_model": CLAUDE,
        "endpoint_url": fake.url,
        "batch_min_records": MIN_RECORDS,
        "batch_max_records": MAX_RECORDS,
        "batch_max_jobs": MAX_JOBS,
    }
    with LocalStack(
        endpoint_url=UNUSED_URL,
        parameter_overrides={"Endpoints": json.dumps({"claude": settings})},
        container_env=FAST_RETRIES,
        write_state=False,
        schedule_interval_s=0.3,
    ) as s:
        # The fake's jobs read and write the stack's bucket, on the stack's moto server.
        assert s.resources.aws_endpoint_url
        fake.use_s3(s.resources.aws_endpoint_url)
        yield s


def chat(custom_id: str, text: str) -> dict[str, Any]:
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def until(
    client: LlmbatchClient, job_id: str, condition: Callable[[JobStatus], bool], timeout_s: float = TIMEOUT_S
) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while not condition(st := await client.status(job_id)):
        assert time.monotonic() < deadline, f"condition not met in {timeout_s}s: {st.to_dict()}"
        await asyncio.sleep(0.1)
    return st


def jobs_of(fake: BedrockFakeThread, job_id: str) -> list[dict[str, Any]]:
    """The fake's model invocation jobs of one llmbatch job (its name is in theirs)."""
    return [j for j in fake.batch_jobs() if job_id in j["jobName"]]


async def fake_until(
    fake: BedrockFakeThread, job_id: str, condition: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition(jobs := jobs_of(fake, job_id)):
        assert time.monotonic() < deadline, f"fake jobs not as expected in {TIMEOUT_S}s: {jobs}"
        await asyncio.sleep(0.05)
    return jobs


async def step(fake: BedrockFakeThread, job: dict[str, Any], times: int = 1) -> None:
    """Step a fake job ``times`` times, each step seen taken before the next."""
    for _ in range(times):
        before = (job["status"], job["processedRecordCount"])
        fake.step_batch_job(job["jobArn"])
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            [job] = [j for j in fake.batch_jobs() if j["jobArn"] == job["jobArn"]]
            if (job["status"], job["processedRecordCount"]) != before:
                break
            assert time.monotonic() < deadline, f"{job['jobArn']} did not take its step"
            await asyncio.sleep(0.02)


async def test_a_bedrock_batch_job_runs_in_parts_within_the_quota_and_its_failure_retries_online(
    stack: LocalStack, fake: BedrockFakeThread, tmp_path: Path
) -> None:
    fake.configure_batch(step_s=FROZEN_STEP_S)
    # GIVEN 10 requests, one of which Bedrock throttles (a batch job tries a record once)
    ids = [f"b-{i:02d}" for i in range(10)]
    throttled = "b-05"
    lines = [chat(c, f"[[bedrock:fail-first-1:ThrottlingException]] q{c}" if c == throttled else f"q {c}") for c in ids]
    path = write_jobfile(tmp_path / "job.jsonl", lines)

    async with LlmbatchClient(stack.resources) as client:
        # WHEN it is submitted on the batch lane: parts of 4, 3 and 3 (none under the minimum)
        job_id, choice = await client.submit_on_lane(path, lane="batch", endpoint="claude")
        assert choice.lane is Lane.BATCH and "10 record(s) in 3 native job(s) of at most 4" in choice.reason

        # THEN the poller starts two model invocation jobs, as many as the quota allows
        st = await until(client, job_id, lambda s: s.meta.native_parts_running == MAX_JOBS)
        assert (st.state, st.meta.native_parts, st.meta.native_parts_done) == (JobState.QUEUED, 3, 0)
        first, _ = await fake_until(fake, job_id, lambda jobs: len(jobs) == MAX_JOBS)
        assert first["roleArn"] == f"arn:aws:iam::123456789012:role/{stack.stack_name}-BedrockBatchRole"
        assert first["modelId"] == CLAUDE and first["totalRecordCount"] == 4
        bucket = stack.resources.payload_bucket
        assert first["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].startswith(f"s3://{bucket}/batch/{job_id}/")

        # ... and status shows a part's progress as Bedrock reports it
        await step(fake, first, STEPS_TO_RUN + 2)
        st = await until(client, job_id, lambda s: s.meta.native_completed == 2)
        assert st.state is JobState.IN_PROGRESS and not st.finished and st.counts.terminal == 0
        assert len(jobs_of(fake, job_id)) == MAX_JOBS  # the third part waits for room

        # WHEN the jobs run at speed: the third part starts in the room the first ones free
        fake.configure_batch(step_s=FAST_STEP_S)
        final = await wait_finished(client, job_id, timeout_s=TIMEOUT_S)
        noted = await until(client, job_id, lambda s: s.meta.native_parts_done == 3)

        # THEN the job completed with the throttled record failed with Bedrock's error
        assert final.state is JobState.COMPLETED
        assert (final.counts.succeeded, final.counts.failed) == (9, 1)
        assert (noted.meta.native_completed, noted.meta.native_failed, noted.meta.native_parts_running) == (9, 1, 0)
        assert [j["status"] for j in jobs_of(fake, job_id)] == ["Completed", "PartiallyCompleted", "Completed"]
        out, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
        summary = await client.export_results(job_id, out, errors)
        assert (summary.written, summary.errors, summary.missing) == (9, 1, 0)
        got = [json.loads(x) for x in out.read_text().splitlines()]
        assert [g["custom_id"] for g in got] == [c for c in ids if c != throttled]
        assert got[0]["response"]["body"]["object"] == "chat.completion"
        assert got[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: q b-00"
        [bad] = [json.loads(x) for x in errors.read_text().splitlines()]
        assert bad["custom_id"] == throttled and bad["error"]["code"] == "429"
        assert bad["error"]["message"].startswith("ThrottlingException")
        # no online call was made: the fake's runtime was never asked
        assert fake.stats()["calls"].get("converse", 0) == 0
        # nothing timed the imported answers: no latency figures, no requests/s (not "0 ms")
        assert final.timing.answered == 0 and final.requests_per_s is None
        shown = figure_lines(final)
        assert shown["latency_ms"] == "not applicable (batch lane: requests are not timed)"
        assert shown["requests_per_s"] == "not applicable (batch lane)"

        # WHEN its failure is retried: online, through the queue and the workers (Converse)
        assert await client.retry_failed(job_id) == 1
        again = await wait_finished(client, job_id, timeout_s=TIMEOUT_S)
        results = {r.custom_id: r for r in await client.results(job_id)}

    assert again.state is JobState.COMPLETED and (again.counts.succeeded, again.counts.failed) == (10, 0)
    assert again.timing.answered == 1  # the one answer timed: the online retry's
    assert figure_lines(again)["latency_ms"].endswith("over 1 answered online (retried)")
    assert results[throttled].status is RequestStatus.SUCCEEDED
    assert results[throttled].response_body["choices"][0]["message"]["content"].endswith(f"q{throttled}")
    assert fake.stats()["answered_by_request"] == {f"[[bedrock:fail-first-1:ThrottlingException]] q{throttled}": 1}


async def test_auto_runs_online_below_the_minimum_records_and_on_bedrock_batch_at_it(
    stack: LocalStack, fake: BedrockFakeThread, tmp_path: Path
) -> None:
    fake.configure_batch(step_s=FAST_STEP_S)
    below = write_jobfile(tmp_path / "below.jsonl", [chat(f"s-{i}", f"small {i}") for i in range(MIN_RECORDS - 1)])
    at = write_jobfile(tmp_path / "at.jsonl", [chat(f"m-{i}", f"minimum {i}") for i in range(MIN_RECORDS)])
    async with LlmbatchClient(stack.resources) as client:
        jobs_before = len(await client.list_jobs())
        with pytest.raises(LaneRefusedError, match=f"below the batch API's minimum of {MIN_RECORDS}"):
            await client.submit_on_lane(below, lane="batch", endpoint="claude")
        assert len(await client.list_jobs()) == jobs_before  # nothing created

        small, small_choice = await client.submit_on_lane(below, lane="auto", endpoint="claude")
        enough, enough_choice = await client.submit_on_lane(at, lane="auto", endpoint="claude")
        assert (small_choice.lane, enough_choice.lane) == (Lane.ONLINE, Lane.BATCH)
        assert f"{MIN_RECORDS - 1} record(s), below the batch API's minimum of {MIN_RECORDS}" in small_choice.reason
        small_done = await wait_finished(client, small, timeout_s=TIMEOUT_S)
        enough_done = await until(client, enough, lambda s: s.finished and s.meta.native_parts_done == 1)

    assert small_done.counts.succeeded == MIN_RECORDS - 1 and small_done.to_dict()["lane"] == "online"
    assert enough_done.counts.succeeded == MIN_RECORDS and enough_done.to_dict()["lane"] == "batch"
    assert [j["totalRecordCount"] for j in jobs_of(fake, small)] == []
    assert [j["status"] for j in jobs_of(fake, enough)] == ["Completed"]


async def test_cancel_stops_the_model_invocation_jobs_and_keeps_what_they_answered(
    stack: LocalStack, fake: BedrockFakeThread, tmp_path: Path
) -> None:
    fake.configure_batch(step_s=FROZEN_STEP_S)
    path = write_jobfile(tmp_path / "job.jsonl", [chat(f"c-{i}", f"cancel me {i}") for i in range(6)])
    async with LlmbatchClient(stack.resources) as client:
        job_id, _ = await client.submit_on_lane(path, lane="batch", endpoint="claude")
        first, _ = await fake_until(fake, job_id, lambda jobs: len(jobs) == 2)
        await step(fake, first, STEPS_TO_RUN + 1)  # one record of the first part answered
        await until(client, job_id, lambda s: s.meta.native_completed == 1)

        await client.cancel(job_id)
        final = await until(client, job_id, lambda s: s.finished and s.meta.native_parts_done == 2)
        results = await client.results(job_id)

    assert final.state is JobState.CANCELLED
    assert (final.counts.succeeded, final.counts.cancelled, final.counts.failed) == (1, 5, 0)
    assert [j["status"] for j in jobs_of(fake, job_id)] == ["Stopped", "Stopped"]
    assert [r.line for r in results] == list(range(1, 7))
    assert [r.status for r in results][:1] == [RequestStatus.SUCCEEDED]
    assert {r.error_code for r in results if r.status is RequestStatus.CANCELLED} == {"cancelled"}
