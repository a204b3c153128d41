"""The local stand-in for Lambda's SQS pollers (llmbatch/local/poller.py) on an idle queue: one
slot long-polls for the mapping, the others wait for it, and they all gather once it finds
messages, as Lambda keeps a few pollers on an empty queue and adds more as messages come."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.poller import EventSourceMappingEmulator
from llmbatch.local.runner import LocalStack
from tests.functional.conftest import chat_line, wait_finished, write_jobfile

pytestmark = pytest.mark.functional

SLOTS = 8


def request_queue_poller(stack: LocalStack) -> EventSourceMappingEmulator:
    return next(p for p in stack.pollers if p.source.queue_url == stack.resources.request_queue_url)


async def allow_slots(client: LlmbatchClient, poller: EventSourceMappingEmulator) -> None:
    """The mapping set to allow SLOTS invocations, and its SLOTS slots started."""
    await client.set_worker_concurrency(SLOTS)
    deadline = time.monotonic() + 10
    while len(poller._threads) < SLOTS and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert len(poller._threads) == SLOTS


class Receives:
    """Counts a poller's ReceiveMessage calls, and the most in flight at once."""

    def __init__(self, poller: EventSourceMappingEmulator) -> None:
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        original = poller._receive

        def receive(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            with self._lock:
                self.calls += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.in_flight -= 1

        poller._receive = receive  # type: ignore[method-assign]


async def test_an_idle_queue_is_polled_by_one_slot_and_a_job_still_runs_at_once(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN the request queue's mapping allowing SLOTS invocations, its slots all started
    poller = request_queue_poller(stack)
    async with LlmbatchClient(stack.resources) as client:
        await allow_slots(client, poller)
        await asyncio.sleep(1.5)  # every slot past its first look at the empty queue

        # WHEN the queue stays empty for a few seconds
        receives = Receives(poller)
        started = time.monotonic()
        await asyncio.sleep(3.0)
        elapsed = time.monotonic() - started

        # THEN one long poll (of 1 s) at a time was made, not one per slot: one a second
        assert receives.most_in_flight == 1
        assert receives.calls <= elapsed + 1, (receives.calls, elapsed)

        # WHEN a job comes / THEN the polling slot finds it and the job runs to the end
        path = write_jobfile(tmp_path / "job.jsonl", [chat_line(f"r{i}", f"q{i}") for i in range(30)])
        job_id = await client.submit(path, name="after-idle")
        status = await wait_finished(client, job_id, timeout_s=60)
        assert status.counts.succeeded == 30


#: The bodies of the messages the next test sends (an earlier test's job's are JSON).
PREFIX = "in-order-"


async def test_messages_arriving_one_by_one_fill_one_batch_at_a_time(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the request queue's mapping with SLOTS slots free, its invocations recorded (and
    # their messages deleted) instead of run
    poller = request_queue_poller(stack)
    batches: list[list[str]] = []
    recorded = threading.Lock()

    def invoke(index: int, sqs: Any, settings: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with recorded:
            ours = [m["Body"] for m in messages if m["Body"].startswith(PREFIX)]
            if ours:
                batches.append(ours)
        return messages

    monkeypatch.setattr(poller, "_invoke", invoke)
    to_delete: list[str] = []
    delete_all = poller._delete_all

    def recorded_delete_all(sqs: Any, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with recorded:  # this test's messages only: a slot may still hold an earlier job's
            to_delete.extend(m["Body"] for m in done if m["Body"].startswith(PREFIX))
        return delete_all(sqs, done)

    monkeypatch.setattr(poller, "_delete_all", recorded_delete_all)
    async with LlmbatchClient(stack.resources) as client:
        await allow_slots(client, poller)

        # WHEN messages arrive one at a time, as a producer sends them, slower than the
        # slots could take them
        sent = [f"{PREFIX}{i:02d}" for i in range(40)]
        for body in sent:
            await client.sqs.send_message(QueueUrl=stack.resources.request_queue_url, MessageBody=body)
            await asyncio.sleep(0.025)
        deadline = time.monotonic() + 15
        while (sum(map(len, batches)) < len(sent) or len(to_delete) < len(sent)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    # THEN every message went to one batch, and each batch holds messages in the order they
    # came: one batch filled at a time, not every free slot's batch at once (interleaved).
    # (SQS does not promise a standard queue's order; the local stack's queue keeps it, so
    # the order shows which slot took what.)
    assert sorted(b for batch in batches for b in batch) == sent
    # every batch's messages sent for deletion once, the ones a slot held while it waited for
    # its turn too
    assert sorted(to_delete) == sent
    for batch in batches:
        first = sent.index(batch[0])
        assert batch == sent[first : first + len(batch)], batches
    assert len(batches) < len(sent) // 4, batches  # batches, not messages one by one
