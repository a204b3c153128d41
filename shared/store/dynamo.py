"""The DynamoDB client both tables share: every call counted, batch operations chunked to
DynamoDB's limits and called again for what it left unprocessed, with backoff in between.

BatchWriteItem has no conditions, so it cannot promise a result is written once; it is used
for the retry notes and dead letters, where last-writer-wins is what we want (terminal
results go in conditional transactions: :mod:`shared.store.terminal_writes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from shared.store.item_size import from_ddb, to_ddb
from shared.store.retry import Backoff

BATCH_WRITE_MAX_ITEMS = 25
BATCH_GET_MAX_KEYS = 100


class DynamoClient:
    """An aiobotocore DynamoDB client, its calls counted, with the batch operations."""

    def __init__(self, ddb: Any, *, max_attempts: int = 8) -> None:
        self.ddb = ddb
        self._max_attempts = max_attempts
        #: Calls made, by operation: the benchmark reports AWS calls per request.
        self.calls: Counter[str] = Counter()

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One DynamoDB call, counted."""
        self.calls[op] += 1
        return await getattr(self.ddb, op)(**kwargs)

    def backoff(self, give_up_at: float | None = None) -> Backoff:
        """Backoff for one operation: ``max_attempts``, or until ``give_up_at``."""
        return Backoff(self._max_attempts, give_up_at)

    async def batch_get(
        self, table: str, keys: list[dict[str, Any]], projection: str | None = None
    ) -> list[dict[str, Any]]:
        """BatchGetItem, consistent, in chunks of 100 keys."""
        out: list[dict[str, Any]] = []

        def collect(resp: dict[str, Any]) -> None:
            out.extend(from_ddb(i) for i in resp.get("Responses", {}).get(table, []))

        for start in range(0, len(keys), BATCH_GET_MAX_KEYS):
            request: dict[str, Any] = {
                "Keys": [to_ddb(k) for k in keys[start : start + BATCH_GET_MAX_KEYS]],
                "ConsistentRead": True,
            }
            if projection:
                request["ProjectionExpression"] = projection
            await self._until_processed("batch_get_item", {table: request}, "UnprocessedKeys", collect)
        return out

    async def batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying UnprocessedItems with backoff."""
        for start in range(0, len(requests), BATCH_WRITE_MAX_ITEMS):
            chunk = {table: requests[start : start + BATCH_WRITE_MAX_ITEMS]}
            await self._until_processed("batch_write_item", chunk, "UnprocessedItems", lambda _resp: None)

    async def _until_processed(
        self, op: str, request: dict[str, Any], unprocessed: str, on_response: Callable[[dict[str, Any]], None]
    ) -> None:
        """Call a batch operation until DynamoDB has processed everything, handing back
        what it left (``UnprocessedKeys``/``UnprocessedItems``) with backoff in between."""
        backoff = self.backoff()
        code = "unprocessed_keys" if unprocessed == "UnprocessedKeys" else "unprocessed_items"
        pending = request
        while pending:
            resp = await self.call(op, RequestItems=pending)
            on_response(resp)
            pending = resp.get(unprocessed) or {}
            if pending:
                await backoff.wait(f"DynamoDB kept {code.removeprefix('unprocessed_')} unprocessed", code)
