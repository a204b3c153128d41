"""A concurrency limit whose size can change while calls are waiting.

``asyncio.Semaphore`` cannot be resized; the console (and adaptive concurrency) change the
number of model calls in flight while an invocation runs, so the limit is a condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AdjustableLimiter:
    """At most ``limit`` holders at once; waiters are served first come, first served."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._in_use = 0
        self._cond = asyncio.Condition()
        self.max_in_use = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    async def set_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self._cond:
            self._limit = limit
            self._cond.notify_all()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: self._in_use < self._limit)
            self._in_use += 1
            self.max_in_use = max(self.max_in_use, self._in_use)
        try:
            yield
        finally:
            # Shielded so a cancelled holder still gives its slot back.
            await asyncio.shield(self._release())

    async def _release(self) -> None:
        async with self._cond:
            self._in_use -= 1
            # notify_all, not notify: a waiter cancelled right after being woken would
            # swallow a single wake-up and leave the free slot unused.
            self._cond.notify_all()
