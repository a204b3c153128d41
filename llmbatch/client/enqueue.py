"""Sending a job's messages to SQS: many SendMessageBatch calls in flight, with resume points.

``submit`` used to send a job in chunks of ``checkpoint`` messages and note each chunk in the
job record before starting the next: every chunk ended with a tail where fewer and fewer calls
were in flight, then a DynamoDB write with none. Here the calls flow without a pause: a fixed
number of senders take the next batch as soon as theirs is sent, and the resume point (the
longest run of messages, from the first, that are all sent) is noted in the background as it
passes each checkpoint, never more than one note at a time. A submit that dies resumes from
its last note; messages after it may be sent again, which the workers' conditional writes
absorb (a request is answered once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from shared.errors import ConfigError, TransientError
from shared.queue_ops import Copy, pack_batches

#: SendMessageBatch calls in flight (each waits mostly on the network, not on this process).
SUBMIT_PARALLELISM = 32
#: Messages sent between two notes of the resume point in the job record.
SUBMIT_CHECKPOINT = 1000
#: Tries of a batch's entries that SQS failed on its side (throttling, internal errors).
SEND_TRIES = 8

ProgressCallback = Callable[[int, int], None]
Checkpoint = Callable[[int], Coroutine[Any, Any, None]]


class _ResumePoint:
    """The longest prefix of batches that are all sent, in messages, and its notes."""

    def __init__(self, sizes: Sequence[int], start: int, note: Checkpoint | None, every: int) -> None:
        self._sizes = sizes
        self._done = [False] * len(sizes)
        self._next = 0
        self.sent = start
        self._note = note
        self._every = every
        self._noted = start
        self._noting: asyncio.Task[None] | None = None

    def batch_sent(self, index: int) -> None:
        self._done[index] = True
        while self._next < len(self._done) and self._done[self._next]:
            self.sent += self._sizes[self._next]
            self._next += 1
        if self._note and self.sent - self._noted >= self._every and (self._noting is None or self._noting.done()):
            self._start_note()

    def _start_note(self) -> None:
        assert self._note is not None
        if self._noting is not None and self._noting.done():
            self._noting.result()  # a failed note fails the submit, as it did when awaited
        self._noted = self.sent
        self._noting = asyncio.create_task(self._note(self.sent))

    async def settle(self) -> None:
        """Wait for the note in flight (its failure is the submit's)."""
        if self._noting is not None:
            await self._noting


async def send_messages(
    sqs: Any,
    queue_url: str,
    bodies: Sequence[str],
    *,
    group: str | None,
    start: int = 0,
    on_progress: ProgressCallback | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int | None = None,
    parallelism: int = SUBMIT_PARALLELISM,
) -> int:
    """Send ``bodies[start:]`` (``group`` is each message's ``MessageGroupId``: the job id, so
    SQS fair queues serve a job with few messages in flight before one with many). Calls
    ``checkpoint(n)`` in the background whenever the first ``n`` messages are all sent and
    ``n`` has moved ``checkpoint_every`` (default ``SUBMIT_CHECKPOINT``) since the last call; returns how many were sent in
    all (``len(bodies)``). The caller notes the final count itself. When a batch fails, no
    new batch starts, the calls in flight finish, and ``checkpoint`` gets the resume point
    they reached before the failure is raised.

    Raises
    ------
    ConfigError
        SQS refused a message as the sender's fault (too big, bad characters).
    TransientError
        SQS kept failing some entries on its side.
    """
    rest = bodies[start:]
    batches = [[rest[i] for i in group_] for group_ in pack_batches(rest)]
    every = checkpoint_every or SUBMIT_CHECKPOINT
    resume = _ResumePoint([len(b) for b in batches], start, checkpoint, every)
    # One iterator shared by every sender: each takes the next batch when its own is sent.
    pending = iter(range(len(batches)))
    failed = False
    sent = start

    async def sender() -> None:
        nonlocal sent, failed
        for index in pending:
            if failed:  # another sender's batch failed: take nothing new
                return
            try:
                await send_batch(sqs, queue_url, batches[index], group)
            except BaseException:
                failed = True
                raise
            sent += len(batches[index])
            resume.batch_sent(index)
            if on_progress:
                on_progress(sent, len(bodies))

    tasks = [asyncio.create_task(sender()) for _ in range(min(parallelism, len(batches)))]
    # Every sender ends, the others' calls in flight included (they are on the wire): then
    # the resume point counts all that got through, and the first failure is raised.
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await resume.settle()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            if checkpoint is not None:
                await checkpoint(resume.sent)
            raise outcome
    return resume.sent


async def send_batch(sqs: Any, queue_url: str, batch: Sequence[str], group: str | None) -> None:
    """One SendMessageBatch, retrying the entries SQS failed on its side with backoff."""
    entries = {str(i): Copy(body, group=group) for i, body in enumerate(batch)}
    for attempt in range(SEND_TRIES):
        resp = await sqs.send_message_batch(QueueUrl=queue_url, Entries=[c.entry(i) for i, c in entries.items()])
        failed = resp.get("Failed") or []
        permanent = [f for f in failed if f.get("SenderFault")]
        if permanent:
            raise ConfigError(f"SQS refused a message: {permanent[0].get('Message')}")
        entries = {f["Id"]: entries[f["Id"]] for f in failed}
        if not entries:
            return
        await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
    raise TransientError("SQS kept refusing messages", code="enqueue")
