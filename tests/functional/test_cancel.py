"""Cancelling a job: what is not yet answered ends cancelled, without a model call."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.jobs import JobState
from tests.functional.conftest import chat_line, sim_reset, sim_stats, wait_finished, write_jobfile


async def test_a_cancelled_job_ends_cancelled_with_exact_counts_and_no_further_calls(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN a slow endpoint and a job of 120 requests
    sim_reset(stack, slots=2, base_latency_s=0.2)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(120)])
    async with LlmbatchClient(stack.resources) as client:
        job_id = await client.submit(job_file)
        while (await client.status(job_id)).counts.succeeded < 5:
            await asyncio.sleep(0.1)

        # WHEN it is cancelled part way
        await client.cancel(job_id)
        final = await wait_finished(client, job_id, timeout_s=90)
        results = await client.results(job_id)

    # THEN every request is terminal exactly once, most of them cancelled, none called after
    assert final.state is JobState.CANCELLED
    c = final.counts
    assert c.succeeded + c.failed + c.cancelled == 120 and final.pending == 0
    assert c.cancelled > 0 and c.succeeded >= 5
    assert len({r.custom_id for r in results}) == 120
    assert sim_stats(stack)["requests_total"] == c.succeeded
    sim_reset(stack)
