"""A whole job through the local stack: submit, workers, results."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.results import RequestStatus
from tests.functional.conftest import chat_line, sim_stats, wait_finished, write_jobfile


async def test_a_500_request_job_completes_with_exact_counts_and_one_result_per_request(
    fresh_sim: LocalStack, tmp_path: Path
) -> None:
    # GIVEN a 500-request job, mixing the three routes
    lines = []
    for i in range(500):
        if i % 25 == 0:
            lines.append(
                {
                    "custom_id": f"e{i}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": "sim-model", "input": f"text {i}"},
                }
            )
        else:
            lines.append(chat_line(f"c{i}", f"question {i}"))
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)

    async with LlmbatchClient(fresh_sim.resources) as client:
        # WHEN it is submitted and runs to the end
        job_id = await client.submit(job_file)
        final = await wait_finished(client, job_id)
        out = tmp_path / "out.jsonl"
        summary = await client.export_results(job_id, out)
        first_page = await client.results(job_id, limit=120)

    # THEN every request succeeded exactly once, counted once, in input order
    assert (final.counts.succeeded, final.counts.failed, final.pending) == (500, 0, 0)
    assert final.state.value == "completed"
    output = [json.loads(x) for x in out.read_text().splitlines()]
    assert [o["custom_id"] for o in output] == [line["custom_id"] for line in lines]
    assert summary.written == 500 and summary.missing == 0
    # ... and a view may read only the first of them
    assert len(first_page) == 120 and len({r.custom_id for r in first_page}) == 120
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in output)
    assert output[0]["response"]["body"]["object"] == "embedding" or output[0]["response"]["body"]["data"]
    # ... and the endpoint was called once per request: no duplicate paid calls
    stats = sim_stats(fresh_sim)
    assert {k: n for k, n in stats["calls_by_custom_id"].items() if n != 1} == {}
    # (the 20 single-input embeddings may share calls: request packing, shared/packing.py)
    by_route = stats["requests_by_route"]
    assert by_route["/v1/chat/completions"] == 480
    assert 1 <= by_route["/v1/embeddings"] <= 20
    assert stats["requests_total"] == 480 + by_route["/v1/embeddings"]
    assert all(n == 1 for n in stats["calls_by_custom_id"].values())
    # ... and nothing is left on the queues
    sqs = boto3.client("sqs", **fresh_sim.resources.client_kwargs())
    attrs = sqs.get_queue_attributes(QueueUrl=fresh_sim.resources.request_queue_url, AttributeNames=["All"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"


async def test_429s_and_5xx_are_retried_through_sqs_and_400s_are_recorded_once(
    fresh_sim: LocalStack, tmp_path: Path
) -> None:
    # GIVEN requests the endpoint throttles, fails with 5xx, or refuses as bad
    lines = [
        chat_line("throttled", "[[sim:fail-first-2:429]] a"),
        chat_line("flaky", "[[sim:fail-first-2:503]] b"),
        chat_line("bad", "[[sim:400]] c"),
        *[chat_line(f"ok-{i}", f"fine {i}") for i in range(7)],
    ]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)

    async with LlmbatchClient(fresh_sim.resources) as client:
        # WHEN the job runs
        job_id = await client.submit(job_file)
        final = await wait_finished(client, job_id, timeout_s=90)
        results = {r.custom_id: r for r in await client.results(job_id)}

    # THEN the transient ones succeeded on their third attempt, the 400 failed once
    assert (final.counts.succeeded, final.counts.failed) == (9, 1)
    assert results["throttled"].status is RequestStatus.SUCCEEDED and results["throttled"].attempt == 3
    assert results["flaky"].status is RequestStatus.SUCCEEDED and results["flaky"].attempt == 3
    assert results["bad"].status is RequestStatus.FAILED
    assert results["bad"].status_code == 400 and results["bad"].attempt == 1
    calls = sim_stats(fresh_sim)["calls_by_custom_id"]
    assert (calls["throttled"], calls["flaky"], calls["bad"]) == (3, 3, 1)
