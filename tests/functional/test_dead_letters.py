"""Requests that use up their receives end failed, the job finishes, and redrive reopens them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.jobs import JobState
from shared.results import RequestStatus
from tests.functional.conftest import (
    FAST_RETRIES,
    TEST_SIMULATOR,
    chat_line,
    template_variant,
    wait_finished,
    write_jobfile,
)

MAX_RECEIVES = 3


def few_receives(template: dict[str, Any]) -> None:
    template["Resources"]["RequestQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = MAX_RECEIVES


async def test_a_request_that_exhausts_its_retries_is_failed_and_redrive_completes_it(tmp_path: Path) -> None:
    # GIVEN a queue that dead-letters after 3 receives and a request failing 3 times with 503
    local = LocalStack(
        template_path=template_variant(tmp_path, few_receives),
        simulator_config=TEST_SIMULATOR,
        container_env=FAST_RETRIES,
        write_state=False,
    )
    lines = [chat_line("doomed", "[[sim:fail-first-3:503]] x"), *[chat_line(f"ok-{i}") for i in range(4)]]
    job_file = write_jobfile(tmp_path / "job.jsonl", lines)
    with local:
        async with LlmbatchClient(local.resources) as client:
            # WHEN the job runs
            job_id = await client.submit(job_file)
            first = await wait_finished(client, job_id, timeout_s=120)
            doomed = {r.custom_id: r for r in await client.results(job_id)}["doomed"]
            letters = await client.dead_letters(job_id)

            # THEN the job finished with the request failed, its last error kept
            assert first.state is JobState.COMPLETED
            assert (first.counts.succeeded, first.counts.failed) == (4, 1)
            assert doomed.status is RequestStatus.FAILED and doomed.error_code == "retries_exhausted"
            assert "503" in (doomed.error_message or "")
            assert [d.key for d in letters] == ["doomed"]

            # WHEN the dead letter is redriven (the endpoint now answers)
            moved = await client.redrive(job_id)
            second = await wait_finished(client, job_id, timeout_s=60)
            again = {r.custom_id: r for r in await client.results(job_id)}["doomed"]

            # THEN the request reopened and completed, counted once
            assert moved == 1
            assert (second.counts.succeeded, second.counts.failed, second.pending) == (5, 0, 0)
            assert again.status is RequestStatus.SUCCEEDED
            assert await client.dead_letters(job_id) == []
