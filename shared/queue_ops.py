"""The worker's own SQS calls: retry-later visibility, fresh copies of deferred messages,
and dead-lettering a message nobody can record.

A *deferred* record is one whose model call never went out (the rate limit, a Retry-After
pause or the invocation's deadline came first). Handing it back to SQS would count a receive
toward the queue's ``maxReceiveCount``, so a deep backlog behind a rate limit would
dead-letter requests that were never called. Instead the worker sends a fresh copy (its
receive count starts again; the message's ``receives`` field carries the receives that did
count) and lets SQS delete the original. If the copy is sent and the original is not deleted
(the container dies in between), the request is delivered twice, which the conditional
result write already absorbs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.backoff import SQS_MAX_DELAY_S
from shared.errors import TransientError, UnreadableMessageError
from shared.priority import PriorityQueues

#: SQS's own limits for one SendMessageBatch, and for DelaySeconds.
SQS_BATCH_MAX_ENTRIES = 10
SQS_BATCH_MAX_BYTES = 1_048_576
#: How long a deferred copy waits for others to share its SendMessageBatch.
REQUEUE_WAIT_S = 0.2
#: A queue's messages that are work still to do: waiting, in flight, or delayed.
BACKLOG_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def batches_of(bodies: Iterable[str]) -> Iterator[list[str]]:
    """``bodies`` grouped into SendMessageBatch calls as they come: at most 10 entries and
    1 MiB (UTF-8) per call, in order. Lazy: a batch is made when it is asked for."""
    current: list[str] = []
    size = 0
    for body in bodies:
        n = len(body.encode())
        if current and size + n > SQS_BATCH_MAX_BYTES:
            yield current
            current, size = [], 0
        current.append(body)
        size += n
        if len(current) == SQS_BATCH_MAX_ENTRIES:  # full: no need to look at the next one
            yield current
            current, size = [], 0
    if current:
        yield current


def pack_batches(bodies: Sequence[str]) -> list[list[int]]:
    """Indexes of ``bodies`` grouped as :func:`batches_of` groups them."""
    batches: list[list[int]] = []
    start = 0
    for batch in batches_of(bodies):
        batches.append(list(range(start, start + len(batch))))
        start += len(batch)
    return batches


class QueueOps:
    """Retry-later visibility, fresh copies, and dead-lettering (its reason attached as a
    message attribute), on the request queues (one per priority, shared/priority.py) and
    their dead-letter queue. Without a queue named, the normal request queue is meant."""

    def __init__(
        self,
        sqs: Any,
        *,
        request_queue_url: str,
        dead_letter_queue_url: str,
        high_queue_url: str = "",
        low_queue_url: str = "",
    ) -> None:
        self._sqs = sqs
        self._queue_url = request_queue_url
        self._dlq_url = dead_letter_queue_url
        self.queues = PriorityQueues.of(normal=request_queue_url, high=high_queue_url, low=low_queue_url)
        self.calls: Counter[str] = Counter()

    @property
    def can_requeue(self) -> bool:
        return bool(self._queue_url)

    async def dead_letter(self, body: str, reason: str) -> None:
        if not self._dlq_url:
            raise UnreadableMessageError(reason, code="unreadable")
        self.calls["send_message"] += 1
        await self._sqs.send_message(
            QueueUrl=self._dlq_url,
            MessageBody=body,
            MessageAttributes={"llmbatch-reason": {"DataType": "String", "StringValue": reason[:1000] or "-"}},
        )

    async def retry_later(self, delays: dict[str, int], *, queue_url: str | None = None) -> None:
        """``receipt handle -> seconds``, 10 per ChangeMessageVisibilityBatch, on the queue the
        messages came from (a receipt handle is good on its own queue only)."""
        queue_url = queue_url or self._queue_url
        if not queue_url or not delays:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": d} for i, (h, d) in enumerate(delays.items())
        ]
        for start in range(0, len(entries), SQS_BATCH_MAX_ENTRIES):
            self.calls["change_message_visibility_batch"] += 1
            await self._sqs.change_message_visibility_batch(
                QueueUrl=queue_url, Entries=entries[start : start + SQS_BATCH_MAX_ENTRIES]
            )

    async def send_copies(self, copies: Sequence[Copy]) -> list[bool]:
        """Send copies, each to its own request queue; which of them were sent."""
        sent = [False] * len(copies)
        by_queue: dict[str, list[int]] = {}
        for i, c in enumerate(copies):
            by_queue.setdefault(c.queue_url or self._queue_url, []).append(i)
        for url, indexes in by_queue.items():
            for batch in pack_batches([copies[i].body for i in indexes]):
                self.calls["send_message_batch"] += 1
                entries = [copies[indexes[j]].entry(str(indexes[j])) for j in batch]
                resp = await self._sqs.send_message_batch(QueueUrl=url, Entries=entries)
                for ok in resp.get("Successful") or []:
                    sent[int(ok["Id"])] = True
        return sent

    async def backlog(self, queue_url: str) -> int:
        """The queue's work still to do: its messages waiting, in flight and delayed (SQS's
        approximate counts, one GetQueueAttributes)."""
        self.calls["get_queue_attributes"] += 1
        resp = await self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(BACKLOG_ATTRIBUTES))
        attrs = resp.get("Attributes") or {}
        return sum(int(attrs.get(name, 0)) for name in BACKLOG_ATTRIBUTES)


@dataclass(frozen=True)
class Copy:
    """A fresh copy of a message for a request queue: its body, how long SQS keeps it
    delayed, its tenant (the job id: SQS fair queues serve a job with a small share of
    the messages in flight before a job with a large one, README: "Fairness between jobs"),
    and the queue it goes to (its original's; None: the normal request queue)."""

    body: str
    delay_s: int = 0
    group: str | None = None
    queue_url: str | None = None

    def entry(self, entry_id: str) -> dict[str, Any]:
        """The SendMessageBatch entry."""
        out: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": self.body,
            "DelaySeconds": max(0, min(SQS_MAX_DELAY_S, self.delay_s)),
        }
        if self.group:
            out["MessageGroupId"] = self.group
        return out


@dataclass
class _Waiting:
    copies: list[Copy] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)


class Requeuer:
    """Collects deferred records' fresh copies and sends them together, by count or by time;
    each ``put`` returns once its copy is on the queue (only then may SQS delete the
    original), or raises ``TransientError`` (the original then goes back to SQS instead)."""

    def __init__(self, queue: QueueOps, *, max_wait_s: float = REQUEUE_WAIT_S) -> None:
        self._queue = queue
        self._max_wait_s = max_wait_s
        self._waiting = _Waiting()
        self._timer: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.sent = 0

    async def put(self, copy: Copy) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.copies.append(copy)
        self._waiting.futures.append(fut)
        if len(self._waiting.copies) >= SQS_BATCH_MAX_ENTRIES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait_s, self.flush)
        await asyncio.shield(fut)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, _Waiting()
        if not waiting.copies:
            return
        task = asyncio.get_running_loop().create_task(self._send(waiting))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, waiting: _Waiting) -> None:
        try:
            sent = await self._queue.send_copies(waiting.copies)
        except Exception as e:  # every waiter learns of it; their originals go back to SQS
            sent = [False] * len(waiting.copies)
            error: BaseException | None = e
        else:
            error = None
        for ok, fut in zip(sent, waiting.futures, strict=True):
            if fut.done():
                continue
            if ok:
                self.sent += 1
                fut.set_result(None)
            else:
                exc = TransientError(f"could not send the deferred copy: {error or 'SQS refused it'}", code="requeue")
                fut.set_exception(exc)

    async def drain(self) -> None:
        self.flush()
        while self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
