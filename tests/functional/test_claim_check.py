"""Payloads too big for SQS or DynamoDB go through S3, transparently for submit and results."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.results import RequestStatus
from tests.functional.conftest import chat_line, sim_reset, wait_finished, write_jobfile


async def test_a_request_over_the_message_limit_and_an_answer_over_the_item_limit_both_round_trip(
    stack: LocalStack, tmp_path: Path
) -> None:
    sim_reset(stack)
    # GIVEN a request of 1.2 MB (over SQS's 1 MiB) and one whose answer is ~900 KB (over 400 KB)
    big_prompt = "word " * 240_000
    huge_answer = {
        "custom_id": "huge-answer",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "sim-model", "input": [f"text {i}" for i in range(24)], "dimensions": 4096},
    }
    lines = [chat_line("big-request", big_prompt), huge_answer, chat_line("small")]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)

    async with LlmbatchClient(stack.resources) as client:
        # WHEN the job is submitted and runs
        job_id = await client.submit(job_file)
        final = await wait_finished(client, job_id, timeout_s=90)
        out = tmp_path / "out.jsonl"
        await client.export_results(job_id, out)

    # THEN all three succeeded, and the results file holds the whole answers
    assert (final.counts.succeeded, final.counts.failed) == (3, 0)
    output = {o["custom_id"]: o for o in map(json.loads, out.read_text().splitlines())}
    assert len(output["huge-answer"]["response"]["body"]["data"]) == 24
    assert len(output["huge-answer"]["response"]["body"]["data"][0]["embedding"]) == 4096
    assert output["big-request"]["response"]["status_code"] == 200
    # ... through the payload bucket: the request and the answer are objects there
    s3 = boto3.client("s3", **stack.resources.client_kwargs())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.resources.payload_bucket).get("Contents", [])]
    assert f"results/{job_id}/huge-answer.json" in keys
    assert any(k.startswith(f"requests/{job_id}/") for k in keys)
    async with LlmbatchClient(stack.resources) as client:
        stored = {r.custom_id: r for r in await client.results(job_id)}
    assert stored["huge-answer"].status is RequestStatus.SUCCEEDED
