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
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from shared.errors import ConfigError, TransientError
from shared.queue_ops import Copy, batches_of

#: SendMessageBatch calls in flight (each waits mostly on the network, not on this process).
SUBMIT_PARALLELISM = 32
#: Messages sent between two notes of the resume point in the job record.
SUBMIT_CHECKPOINT = 1000
#: Tries of a batch's entries that SQS failed on its side (throttling, internal errors).
SEND_TRIES = 8

ProgressCallback = Callable[[int, int], None]
Checkpoint = Callable[[int], Coroutine[Any, Any, None]]


class _ResumePoint:
    """The longest prefix of batches that are all sent, in messages, and its notes. Batches
    are numbered as they are taken (:meth:`batch_taken`), in the order they are sent from."""

    def __init__(self, start: int, note: Checkpoint | None, every: int) -> None:
        self._sizes: list[int] = []
        self._done: list[bool] = []
        self._next = 0
        self.sent = start
        self._note = note
        self._every = every
        self._noted = start
        self._noting: asyncio.Task[None] | None = None

    def batch_taken(self, size: int) -> int:
        """Number the next batch (of ``size`` messages)."""
        self._sizes.append(size)
        self._done.append(False)
        return len(self._sizes) - 1

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
    bodies: Iterable[str],
    *,
    total: int,
    group: str | None,
    start: int = 0,
    on_progress: ProgressCallback | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int | None = None,
    parallelism: int = SUBMIT_PARALLELISM,
) -> int:
    """Send ``bodies``, a job's messages after the first ``start`` (already sent), of
    ``total`` in all (``group`` is each message's ``MessageGroupId``: the job id, so SQS fair
    queues serve a job with few messages in flight before one with many). ``bodies`` is read
    as the senders take batches, so a generator that builds them starts the first call
    before the last is built, and never holds them all. Calls ``checkpoint(n)`` in the
    background whenever the first ``n`` messages are all sent and ``n`` has moved
    ``checkpoint_every`` (default ``SUBMIT_CHECKPOINT``) since the last call; returns how many
    are sent in all (``start`` and those sent here). The caller notes the final count itself.
    When a batch fails, no new batch starts, the calls in flight finish, and ``checkpoint``
    gets the resume point they reached before the failure is raised.

    Raises
    ------
    ConfigError
        SQS refused a message as the sender's fault (too big, bad characters).
    TransientError
        SQS kept failing some entries on its side.
    """
    every = checkpoint_every or SUBMIT_CHECKPOINT
    resume = _ResumePoint(start, checkpoint, every)
    # One iterator shared by every sender: each takes the next batch when its own is sent
    # (taking one runs no await, so no two senders are ever inside it at once).
    pending = batches_of(bodies)
    failed = False
    sent = start

    async def sender() -> None:
        nonlocal sent, failed
        while not failed:  # another sender's batch failed: take nothing new
            try:
                batch = next(pending, None)  # a body that cannot be made fails as its batch would
                if batch is None:
                    return
                index = resume.batch_taken(len(batch))
                await send_batch(sqs, queue_url, batch, group)
            except BaseException:
                failed = True
                raise
            sent += len(batch)
            resume.batch_sent(index)
            if on_progress:
                on_progress(sent, total)

    # At most one sender per message left (a batch holds one to ten); a spare one just ends.
    tasks = [asyncio.create_task(sender()) for _ in range(min(parallelism, max(1, total - start)))]
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
