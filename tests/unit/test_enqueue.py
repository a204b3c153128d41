"""Sending a job's messages (llmbatch/client/enqueue.py) to moto's SQS over real HTTP: every
message exactly once, resume points never ahead of what is sent, a resumed send starting at
its offset, a failed note failing the send, messages made only as the senders take batches,
and the batches within SendMessageBatch's limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from llmbatch.client import enqueue
from llmbatch.client.enqueue import send_messages
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.provision import REGION
from shared.queue_ops import batches_of, pack_batches


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with MotoServer() as server:
        yield server.url


@pytest.fixture
async def sqs(moto_url: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", endpoint_url=moto_url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
    ) as client:
        yield client


async def new_queue(sqs: Any, name: str) -> str:
    return str((await sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "300"}))["QueueUrl"])


async def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        resp = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
        )
        batch = resp.get("Messages", [])
        if not batch:
            return got
        got.extend(batch)


def bodies(n: int) -> list[str]:
    return [json.dumps({"line": i}) for i in range(n)]


async def test_every_message_once_with_resume_points_behind_what_is_sent(sqs: Any) -> None:
    url = await new_queue(sqs, "every-once")
    sent_so_far = 0
    notes: list[int] = []

    def progress(sent: int, total: int) -> None:
        nonlocal sent_so_far
        sent_so_far = sent

    async def note(n: int) -> None:
        # A resume point may only name messages that are all sent already.
        assert n <= sent_so_far
        await asyncio.sleep(0.01)  # a DynamoDB write takes a while; sends go on meanwhile
        notes.append(n)

    total = await send_messages(
        sqs,
        url,
        bodies(537),
        total=537,
        group="job-a",
        on_progress=progress,
        checkpoint=note,
        checkpoint_every=100,
        parallelism=8,
    )

    assert total == 537
    got = await drain(sqs, url)
    assert sorted(json.loads(m["Body"])["line"] for m in got) == list(range(537))
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {"job-a"}
    assert notes, "no resume point was noted"
    assert notes == sorted(notes) and len(set(notes)) == len(notes)
    assert all(n >= 100 for n in notes) and notes[-1] <= 537


async def test_a_resumed_send_starts_at_its_offset(sqs: Any) -> None:
    url = await new_queue(sqs, "resumed")
    total = await send_messages(sqs, url, bodies(45)[30:], total=45, group=None, start=30)
    assert total == 45
    got = await drain(sqs, url)
    assert sorted(json.loads(m["Body"])["line"] for m in got) == list(range(30, 45))


async def test_a_failing_note_fails_the_send(sqs: Any) -> None:
    url = await new_queue(sqs, "bad-note")

    async def note(n: int) -> None:
        raise RuntimeError("the jobs table is gone")

    with pytest.raises(RuntimeError, match="jobs table"):
        await send_messages(
            sqs, url, bodies(40), total=40, group=None, checkpoint=note, checkpoint_every=10, parallelism=2
        )


async def test_a_failed_batch_stops_new_sends_and_notes_what_got_through(
    sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a connection that dies at the 8th SendMessageBatch, with 4 calls in flight at a time
    url = await new_queue(sqs, "dies")
    real_send = enqueue.send_batch
    calls = 0

    async def dying_send(client: Any, queue_url: str, batch: Any, group: str | None) -> None:
        nonlocal calls
        calls += 1
        if calls == 8:
            raise ConnectionError("the submitting laptop went to sleep")
        await real_send(client, queue_url, batch, group)

    monkeypatch.setattr(enqueue, "send_batch", dying_send)
    notes: list[int] = []

    async def note(n: int) -> None:
        notes.append(n)

    # WHEN 300 messages (30 batches) are sent
    with pytest.raises(ConnectionError):
        await send_messages(
            sqs, url, bodies(300), total=300, group=None, checkpoint=note, checkpoint_every=1000, parallelism=4
        )

    # THEN no batch started after the failure, the 7 before it all got through (those in
    # flight finished), and the resume point noted is exactly them
    got = sorted(json.loads(m["Body"])["line"] for m in await drain(sqs, url))
    assert calls == 8
    assert got == list(range(70))
    assert notes == [70]


async def test_messages_are_made_as_the_senders_take_them_not_all_first(sqs: Any) -> None:
    # GIVEN a job's messages made one by one (as submit encodes and signs them)
    url = await new_queue(sqs, "lazy")
    sent_so_far = 0
    sent_when_made: list[int] = []

    def progress(sent: int, total: int) -> None:
        nonlocal sent_so_far
        sent_so_far = sent

    def made() -> Iterator[str]:
        for body in bodies(100):
            sent_when_made.append(sent_so_far)
            yield body

    # WHEN they are sent by one sender
    total = await send_messages(sqs, url, made(), total=100, group=None, on_progress=progress, parallelism=1)

    # THEN each batch's messages were made only once the batches before it were sent: the
    # first call went out before the last message was made
    assert total == 100 and len(await drain(sqs, url)) == 100
    assert sent_when_made == [10 * (i // 10) for i in range(100)]


async def test_a_message_that_cannot_be_made_fails_the_send_and_notes_what_got_through(sqs: Any) -> None:
    # GIVEN messages whose 36th cannot be made
    url = await new_queue(sqs, "unmade")
    notes: list[int] = []

    async def note(n: int) -> None:
        notes.append(n)

    def made() -> Iterator[str]:
        for i, body in enumerate(bodies(50)):
            if i == 35:
                raise ValueError("line 36 cannot be encoded")
            yield body

    # WHEN they are sent
    with pytest.raises(ValueError, match="line 36"):
        await send_messages(
            sqs, url, made(), total=50, group=None, checkpoint=note, checkpoint_every=1000, parallelism=1
        )

    # THEN the three batches before it went, no later one, and the resume point is them
    assert sorted(json.loads(m["Body"])["line"] for m in await drain(sqs, url)) == list(range(30))
    assert notes == [30]


def test_batches_hold_at_most_ten_messages_and_one_mib_in_order() -> None:
    # SendMessageBatch's limits: 10 entries, 1 MiB of bodies (UTF-8) per call
    small = [f"m{i}" for i in range(23)]
    assert list(batches_of(small)) == [small[:10], small[10:20], small[20:]]
    big = ["x" * 600_000, "é" * 300_000, "z"]  # the second is 600,000 bytes in UTF-8
    assert list(batches_of(big)) == [[big[0]], [big[1], big[2]]]
    assert pack_batches(big) == [[0], [1, 2]] and pack_batches([]) == []
