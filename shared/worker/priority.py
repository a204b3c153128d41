"""Strict priority between the request queues: a record is served only while no queue ahead
of its own has work (shared/priority.py).

SQS has no priority between queues, and each queue's event source mapping polls on its own,
so the worker holds the lower priorities back itself: a normal record while the high queue
has work, a low record while the high or the normal queue has. Such a record is *deferred*
(shared/queue_ops.py): a fresh copy goes back to its own queue, delayed a few seconds, and
its receive does not count; it never used an attempt, so it can wait behind the others for
as long as they have work without coming nearer the dead-letter queue.

"Work" is what SQS counts on the queue: messages waiting, in flight or delayed (one
GetQueueAttributes per queue ahead, at most once per ``check_every_s`` per container, and
shared by every record of the container's invocations). A read that fails or does not answer
in time counts as no work: a record is served rather than held back on a guess.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import TransientError
from shared.priority import DEFAULT_PRIORITY, Priority, PriorityQueues
from shared.queue_ops import QueueOps

log = logging.getLogger("llmbatch.worker")

#: The longest a record waits for a queue's counts (the read is shared by its batch).
BACKLOG_READ_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class BatchSource:
    """The queue an invocation's records came from: one event source mapping reads one
    queue, so every record of a batch has the same ``eventSourceARN``."""

    priority: Priority
    #: Where its deferred copies and retry delays go; None: the normal request queue.
    queue_url: str | None

    @classmethod
    def of(cls, records: Sequence[Mapping[str, Any]], queues: PriorityQueues | None) -> BatchSource:
        arn = next((str(r.get("eventSourceARN") or "") for r in records), "")
        if queues is None:
            return cls(DEFAULT_PRIORITY, None)
        return cls(queues.priority_of(arn) or DEFAULT_PRIORITY, queues.url_of(arn) or None)


class PriorityGate:
    """Container-scoped: whether a queue ahead of a priority has work, from cached counts."""

    def __init__(
        self,
        queue: QueueOps,
        *,
        check_every_s: float,
        yield_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._check_every_s = check_every_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._read_at: dict[Priority, float] = {}
        self._busy: dict[Priority, bool] = {}
        #: What a held-back record is deferred with: its copy comes back after about this long.
        self.error = TransientError(
            "a queue of higher priority has work", code="priority_yield", retry_after_s=yield_delay_s
        )

    async def holds_back(self, priority: Priority, *, max_wait_s: float = BACKLOG_READ_TIMEOUT_S) -> bool:
        """Whether a queue served before ``priority`` has work now."""
        for ahead in priority.ahead:
            url = self._queue.queues.url(ahead)
            if url and await self._has_work(ahead, url, max_wait_s):
                return True
        return False

    async def _has_work(self, priority: Priority, url: str, max_wait_s: float) -> bool:
        async with self._lock:
            read_at = self._read_at.get(priority)
            if read_at is not None and self._clock() - read_at < self._check_every_s:
                return self._busy[priority]
            # Noted before the read: a failed or slow read is not retried by every record.
            self._read_at[priority] = self._clock()
            try:
                async with asyncio.timeout(max(0.0, min(BACKLOG_READ_TIMEOUT_S, max_wait_s))):
                    busy = await self._queue.backlog(url) > 0
            except Exception as e:
                log.warning("could not read a queue's backlog; serving records as if it had none: %r", e)
                busy = False
            self._busy[priority] = busy
            return busy
