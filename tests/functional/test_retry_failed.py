"""Retrying a job's failures: only the failed requests run again, and the job finishes again."""

from __future__ import annotations

from pathlib import Path

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.jobs import JobState
from shared.results import RequestStatus
from tests.functional.conftest import chat_line, sim_stats, wait_finished, write_jobfile


async def test_retry_sends_only_the_failed_requests_again_and_the_job_completes_with_exact_counts(
    fresh_sim: LocalStack, tmp_path: Path
) -> None:
    # GIVEN a finished job with two requests the endpoint refused once (422), then accepts
    lines = [
        chat_line("refused-1", "[[sim:fail-first-1:422]] a"),
        chat_line("refused-2", "[[sim:fail-first-1:422]] b"),
        *[chat_line(f"ok-{i}") for i in range(6)],
    ]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)
    async with LlmbatchClient(fresh_sim.resources) as client:
        job_id = await client.submit(job_file)
        first = await wait_finished(client, job_id)
        assert (first.counts.succeeded, first.counts.failed) == (6, 2)

        # WHEN its failures are retried
        sent = await client.retry_failed(job_id)
        second = await wait_finished(client, job_id)
        results = {r.custom_id: r for r in await client.results(job_id)}

    # THEN just those two ran again, and the job is complete with exact counts
    assert sent == 2
    assert second.state is JobState.COMPLETED
    assert (second.counts.succeeded, second.counts.failed, second.pending) == (8, 0, 0)
    assert results["refused-1"].status is RequestStatus.SUCCEEDED
    calls = sim_stats(fresh_sim)["calls_by_custom_id"]
    assert calls["refused-1"] == calls["refused-2"] == 2
    assert all(calls[f"ok-{i}"] == 1 for i in range(6))
