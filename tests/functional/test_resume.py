"""A submit that dies part way is finished with --resume, without losing or doubling requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmbatch.client import enqueue
from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.jobs import JobState
from tests.functional.conftest import chat_line, wait_finished, write_jobfile


class SubmitDied(Exception):
    """Stands for the submitting process dying (Ctrl-C, a lost laptop)."""


async def test_an_interrupted_submit_shows_submitting_and_resume_completes_it_exactly_once(
    fresh_sim: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN checkpoints of 50 requests and a submit of 180 whose connection dies after 7
    # batches of 10
    monkeypatch.setattr(enqueue, "SUBMIT_CHECKPOINT", 50)
    job_file = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(180)])
    real_send = enqueue.send_batch
    batches = 0

    async def dying_send(sqs: Any, queue_url: str, batch: list[str], group: str | None) -> None:
        nonlocal batches
        batches += 1
        if batches > 7:
            raise SubmitDied
        await real_send(sqs, queue_url, batch, group)

    async with LlmbatchClient(fresh_sim.resources) as client:
        monkeypatch.setattr(enqueue, "send_batch", dying_send)
        with pytest.raises(SubmitDied):
            await client.submit(job_file)
        monkeypatch.setattr(enqueue, "send_batch", real_send)
        job = (await client.list_jobs(limit=1))[0]

        # THEN the job says it is still submitting, with the 70 requests that got through noted
        # (the sends in flight finish; none starts after the failure)
        assert job.state is JobState.SUBMITTING and job.meta.enqueued == 70

        # WHEN the submit is resumed
        assert await client.submit(job_file, resume_job_id=job.job_id) == job.job_id
        final = await wait_finished(client, job.job_id, timeout_s=90)
        results = await client.results(job.job_id)

    # THEN every request is answered once and counted once
    assert final.state is JobState.COMPLETED
    assert (final.counts.succeeded, final.pending) == (180, 0)
    assert sorted(r.custom_id for r in results) == sorted(f"r{i}" for i in range(180))
