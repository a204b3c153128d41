"""A concurrency limit whose size can change while calls are waiting, fair between jobs.

``asyncio.Semaphore`` cannot be resized; the console (and adaptive concurrency) change the
number of model calls in flight while an invocation runs, so the limit is kept here.

A batch may hold the records of several jobs (SQS hands them over in no particular order),
and its calls wait for the container's slots. Served in arrival order, a small job's calls
that came after a big job's hundred would wait for all of them. So each waiter names its job
(``key``), and a free slot goes to the waiting call whose job has the fewest calls in flight
here; between calls of jobs with as many, to the one that came first. One job alone is
served first come, first served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class _Waiter:
    seq: int
    key: Hashable
    granted: asyncio.Future[None]


class AdjustableLimiter:
    """At most ``limit`` holders at once; a free slot goes to the waiter whose key holds the
    fewest, then to the earliest."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._in_use = 0
        self._held: Counter[Hashable] = Counter()
        #: Waiters per key, each queue in arrival order; cancelled ones are dropped when met.
        self._queues: dict[Hashable, deque[_Waiter]] = {}
        #: (slots the key held, its first waiter's number, key), pushed whenever either
        #: changes; an entry that no longer matches is skipped when popped. So choosing the
        #: next waiter costs log(keys), not one look at every job of a 10,000-record batch.
        self._heap: list[tuple[int, int, Hashable]] = []
        self._seq = itertools.count()
        self._waiting = 0
        self.max_in_use = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        """Waiters not yet served (nor cancelled)."""
        return self._waiting

    def held(self, key: Hashable = None) -> int:
        """Slots held now by ``key``'s holders."""
        return self._held[key]

    async def set_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._grant()

    @asynccontextmanager
    async def slot(self, key: Hashable = None) -> AsyncIterator[None]:
        """Hold one slot for the block; ``key`` is the holder's job (its share is what the
        order of waiters follows)."""
        await self._acquire(key)
        try:
            yield
        finally:
            self._release(key)

    async def _acquire(self, key: Hashable) -> None:
        if self._in_use < self._limit and not self.waiting:
            self._take(key)
            return
        waiter = _Waiter(next(self._seq), key, asyncio.get_running_loop().create_future())
        queue = self._queues.setdefault(key, deque())
        queue.append(waiter)
        if len(queue) == 1:
            self._push(key)
        self._waiting += 1
        self._grant()
        try:
            await waiter.granted
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                # Granted, then cancelled before it could run: the slot goes back.
                self._release(key)
            else:
                waiter.granted.cancel()  # _grant drops it when it meets it
                self._waiting -= 1
            raise

    def _take(self, key: Hashable) -> None:
        self._in_use += 1
        self._held[key] += 1
        self.max_in_use = max(self.max_in_use, self._in_use)
        self._push(key)

    def _release(self, key: Hashable) -> None:
        self._in_use -= 1
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        self._push(key)
        self._grant()

    def _head(self, key: Hashable) -> _Waiter | None:
        """The key's first waiter still waiting (cancelled ones before it dropped)."""
        queue = self._queues.get(key)
        while queue and queue[0].granted.done():
            queue.popleft()
        if not queue:
            self._queues.pop(key, None)
            return None
        return queue[0]

    def _push(self, key: Hashable) -> None:
        head = self._head(key)
        if head is not None:
            heapq.heappush(self._heap, (self._held[key], head.seq, key))

    def _grant(self) -> None:
        while self._in_use < self._limit:
            waiter = self._next()
            if waiter is None:
                return
            self._waiting -= 1
            self._take(waiter.key)
            waiter.granted.set_result(None)

    def _next(self) -> _Waiter | None:
        """The waiter to serve: of the key holding the fewest slots, its earliest."""
        while self._heap:
            held, seq, key = heapq.heappop(self._heap)
            head = self._head(key)
            if head is None:
                continue
            if (held, seq) != (self._held[key], head.seq):
                self._push(key)  # stale: the key's entry as it stands now
                continue
            return self._queues[key].popleft()
        return None
