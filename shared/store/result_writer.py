"""Collect terminal results and write them together, by size or by time.

The batcher of the seed article: a result waits at most ``max_wait_s`` for others to share
its transaction, and a full batch (99 results, or DynamoDB's 4 MB of items in UTF-8 bytes)
is written at once. Each ``put`` returns only when its result is durable, so a record is
never reported done before its answer is stored.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from shared.errors import TransientError
from shared.results import RequestResult
from shared.store.result_store import ResultStore
from shared.store.terminal_writes import RESULTS_MAX_BYTES_PER_WRITE, RESULTS_MAX_PER_WRITE, result_write_bytes

#: Leave room for the counter update, within DynamoDB's 100 actions and 4 MB per transaction.
MAX_ITEMS_PER_WRITE = RESULTS_MAX_PER_WRITE
MAX_BYTES_PER_WRITE = RESULTS_MAX_BYTES_PER_WRITE


@dataclass
class _Pending:
    results: list[RequestResult] = field(default_factory=list)
    futures: list[asyncio.Future[bool]] = field(default_factory=list)
    size: int = 0


class ResultWriter:
    def __init__(self, store: ResultStore, *, max_wait_s: float = 0.05, give_up_at: float | None = None) -> None:
        """``give_up_at``: the monotonic time after which a throttled write is not tried again
        (the invocation's deadline); without it, the store's ``max_attempts``."""
        self._store = store
        self._max_wait_s = max_wait_s
        self._give_up_at = give_up_at
        self._pending: dict[str, _Pending] = defaultdict(_Pending)
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self.written = 0
        self.duplicates = 0

    async def put(self, result: RequestResult) -> bool:
        """Store ``result``; True if it was the request's first terminal result, False for a
        duplicate. Raises ``TransientError`` if it could not be written."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        size = result_write_bytes(result)
        pending = self._pending[result.job_id]
        if pending.size + size > MAX_BYTES_PER_WRITE and pending.results:
            self._flush_job(result.job_id)
            pending = self._pending[result.job_id]
        pending.results.append(result)
        pending.futures.append(fut)
        pending.size += size
        if len(pending.results) >= MAX_ITEMS_PER_WRITE:
            self._flush_job(result.job_id)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait_s, self._flush_all)
        return await asyncio.shield(fut)

    def _flush_all(self) -> None:
        self._timer = None
        for job_id in list(self._pending):
            self._flush_job(job_id)

    def _flush_job(self, job_id: str) -> None:
        pending = self._pending.pop(job_id, None)
        if not pending or not pending.results:
            return
        task = asyncio.get_running_loop().create_task(self._write(job_id, pending))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, job_id: str, pending: _Pending) -> None:
        try:
            outcome = await self._store.write_terminal(job_id, pending.results, give_up_at=self._give_up_at)
        except Exception as e:  # every waiter learns of the failure
            for fut in pending.futures:
                if not fut.done():
                    fut.set_exception(e)
            return
        written = {id(r) for r in outcome.written}
        unstorable = {id(r): reason for r, reason in outcome.unstorable}
        self.written += len(outcome.written)
        self.duplicates += len(outcome.duplicates)
        for r, fut in zip(pending.results, pending.futures, strict=True):
            if fut.done():
                continue
            if id(r) in unstorable:  # the record goes back to SQS, and in the end to the DeadLetter function
                fut.set_exception(
                    TransientError(f"DynamoDB refused the result: {unstorable[id(r)]}", code="store_refused")
                )
            else:
                fut.set_result(id(r) in written)

    async def drain(self) -> None:
        """Write everything still waiting, and wait for writes under way."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush_all()
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
