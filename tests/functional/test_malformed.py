"""Messages enqueued directly through the SDK that break the schema fail alone."""

from __future__ import annotations

import asyncio
import json
import time

import boto3

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.runner import LocalStack
from shared.deadletter import UNASSIGNED, DeadLetter
from shared.jobs import JobMeta, new_job_id
from shared.results import RequestStatus
from tests.functional.conftest import wait_finished


def message(job_id: str, custom_id: str, line: int, **over: object) -> str:
    body = {
        "v": 1,
        "job_id": job_id,
        "custom_id": custom_id,
        "line": line,
        "url": "/v1/chat/completions",
        "endpoint": "default",
        "body": {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
    }
    return json.dumps({**body, **over})


async def test_a_malformed_message_is_recorded_as_failed_and_does_not_disturb_its_batch(fresh_sim: LocalStack) -> None:
    res = fresh_sim.resources
    sqs = boto3.client("sqs", **res.client_kwargs())
    async with LlmbatchClient(res) as client:
        # GIVEN a job of four requests, enqueued by a program through the SDK, one of them broken,
        # and in the same batch a message nobody can read
        job_id = new_job_id()
        await client.store.create_job(JobMeta(job_id=job_id, total=4, sealed=True, enqueued=4))
        bodies = [
            message(job_id, "good-1", 1),
            message(job_id, "good-2", 2),
            message(job_id, "broken", 3, url="/v1/images/generations"),
            "{not json at all",
            message(job_id, "good-3", 4),
        ]
        # WHEN they are sent in one SendMessageBatch
        sqs.send_message_batch(
            QueueUrl=res.request_queue_url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        )
        final = await wait_finished(client, job_id, timeout_s=60)
        results = {r.custom_id: r for r in await client.results(job_id)}

    # THEN the broken request is failed with the reason, the others succeed
    assert (final.counts.succeeded, final.counts.failed) == (3, 1)
    assert results["broken"].status is RequestStatus.FAILED
    assert results["broken"].error_code == "invalid_message"
    assert "url" in (results["broken"].error_message or "")
    assert all(results[c].status is RequestStatus.SUCCEEDED for c in ("good-1", "good-2", "good-3"))
    # ... and the unreadable one is kept as a dead letter, with its reason
    async with LlmbatchClient(res) as client:
        letters = await wait_for_letter(client, "{not json at all")
    assert "not JSON" in letters[0].reason
    assert letters[0].job_id == UNASSIGNED


async def wait_for_letter(client: LlmbatchClient, body: str, timeout_s: float = 30.0) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [d for d in await client.dead_letters() if d.body == body]
        if found:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"the dead letter never arrived: {await client.dead_letters()}")
