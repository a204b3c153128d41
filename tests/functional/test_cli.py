"""The command line against the running local stack, found through its state file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import boto3
import pytest

from llmbatch.cli.main import main
from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.config import RuntimeLimits
from tests.functional.conftest import chat_line, wait_finished, write_jobfile


@pytest.fixture
def state(fresh_sim: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    path = tmp_path / "local.json"
    path.write_text(fresh_sim.resources.to_json())
    monkeypatch.setenv("LLMBATCH_STATE", str(path))
    return fresh_sim


def job_count(stack: LocalStack) -> int:
    async def count() -> int:
        async with LlmbatchClient(stack.resources) as client:
            return len(await client.list_jobs())

    return asyncio.run(count())


async def finish(stack: LocalStack, job_id: str) -> None:
    async with LlmbatchClient(stack.resources) as client:
        await wait_finished(client, job_id, timeout_s=60)


def queue_depth(stack: LocalStack) -> int:
    sqs = boto3.client("sqs", **stack.resources.client_kwargs())
    attrs = sqs.get_queue_attributes(
        QueueUrl=stack.resources.request_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_a_job_file_with_errors_is_refused_with_file_and_line_and_nothing_is_enqueued(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a file with a good line, bad JSON, a duplicate id and an unsupported url
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(chat_line("a"))
        + "\n"
        + "{oops\n"
        + json.dumps(chat_line("a"))
        + "\n"
        + json.dumps({**chat_line("b"), "url": "/v1/images"})
        + "\n"
    )
    jobs_before = job_count(state)

    # WHEN it is submitted
    code = main(["submit", str(bad)])

    # THEN it is refused, each problem named by FILE:LINE, and nothing was sent or created
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}:2: invalid JSON" in err
    assert f"{bad}:3: duplicate custom_id 'a' (first on line 1)" in err
    assert f"{bad}:4: unsupported url" in err
    assert queue_depth(state) == 0
    assert job_count(state) == jobs_before


def test_submit_status_and_results_work_from_the_command_line(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a job with one request the endpoint refuses
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line("x1"), chat_line("x2", "[[sim:422]]"), chat_line("x3")])

    # WHEN it is submitted, waited for, and exported through the CLI
    assert main(["submit", str(job_file)]) == 0
    job_id = capsys.readouterr().out.strip()
    asyncio.run(finish(state, job_id))
    assert main(["status", job_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    out, errors = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    assert main(["results", job_id, "-o", str(out), "--errors", str(errors)]) == 0

    # THEN status has the machine fields, and results are split by outcome
    assert {k: status[k] for k in ("job_id", "status", "total", "succeeded", "failed", "pending")} == {
        "job_id": job_id,
        "status": "completed",
        "total": 3,
        "succeeded": 2,
        "failed": 1,
        "pending": 0,
    }
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == ["x1", "x3"]
    failed = [json.loads(x) for x in errors.read_text().splitlines()]
    assert [f["custom_id"] for f in failed] == ["x2"]
    assert failed[0]["response"]["status_code"] == 422 and failed[0]["error"]["code"]


def test_commands_without_a_running_stack_say_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMBATCH_STATE", str(tmp_path / "missing.json"))
    assert main(["status", "job-x"]) == 1
    assert "llmbatch local up" in capsys.readouterr().err


def test_the_oldest_message_age_comes_from_the_queues_cloudwatch_metric(state: LocalStack) -> None:
    # GIVEN SQS's metric for the request queue, as AWS publishes it every minute
    cw = boto3.client("cloudwatch", **state.resources.client_kwargs())
    queue_name = state.resources.request_queue_url.rsplit("/", 1)[-1]

    async def age() -> float | None:
        async with LlmbatchClient(state.resources) as client:
            return await client.oldest_message_age_s()

    before = asyncio.run(age())
    cw.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Value": 42.0,
                "Unit": "Seconds",
                "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
            }
        ],
    )
    # WHEN the client reads it / THEN it is the latest maximum, and None before there was any
    assert before is None
    assert asyncio.run(age()) == 42.0

    # AND an older message waiting in the low-priority queue is the oldest of all
    cw.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Value": 99.0,
                "Unit": "Seconds",
                "Dimensions": [
                    {"Name": "QueueName", "Value": state.resources.low_priority_queue_url.rsplit("/", 1)[-1]}
                ],
            }
        ],
    )
    assert asyncio.run(age()) == 99.0


def test_a_job_over_the_stacks_caps_is_refused_with_the_limit_named(
    state: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN caps of 3 requests per job and 100 max_tokens per request, set live
    async def set_caps(**caps: int) -> RuntimeLimits:
        async with LlmbatchClient(state.resources) as client:
            before = await client.get_limits()
            await client.set_limits(before.with_changes(**caps))
            return before

    before = asyncio.run(set_caps(max_requests_per_job=3, max_tokens_per_request=100))
    try:
        lines = [chat_line(f"r{i}") for i in range(5)]
        lines[1]["body"]["max_tokens"] = 5000
        job = write_jobfile(tmp_path / "job.jsonl", lines)

        # WHEN it is submitted
        code = main(["submit", str(job)])
    finally:
        asyncio.run(set_caps(**{k: getattr(before, k) for k in ("max_requests_per_job", "max_tokens_per_request")}))

    # THEN both caps are named, with the lines, and nothing was sent
    err = capsys.readouterr().err
    assert code == 2
    assert f"{job}:2: max_tokens 5000 is over the limit of 100 per request" in err
    assert "over the limit of 3 per job" in err
    assert queue_depth(state) == 0
