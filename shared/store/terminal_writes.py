"""Writing terminal results: each with its count, once, and never at its neighbours' cost.

A result and its counter increment go in one transaction whose put is conditional on the
result not existing yet, so a duplicate delivery can neither overwrite an answer nor count
twice. Results are first fitted to DynamoDB's item limit (:mod:`shared.store.result_fit`), then
packed into transactions within its 100 actions and 4 MB (sizes in UTF-8 bytes, by
:func:`shared.store.item_size.item_bytes`). A transaction DynamoDB refuses as invalid is split
until the refused result is alone; that one is stored as failed (``store_refused``, the
reason kept, no bodies) and counted once. Throttled or conflicting transactions are tried
again with backoff, within the caller's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from shared.errors import TransientError
from shared.latency import FIRST_STARTED, LAST_FINISHED, counter_update, started_at
from shared.results import RequestResult, RequestStatus, utc_now_iso
from shared.store.item_size import ITEM_MAX_BYTES, TRANSACTION_MAX_BYTES, TRANSACTION_MAX_ITEMS, to_ddb
from shared.store.result_fit import fit_item, refused_item, result_bytes
from shared.store.retry import CONDITION_FAILED, RETRYABLE_CODES, VALIDATION_CODE, error_parts, reason_text

if TYPE_CHECKING:
    from shared.store.results_table import ResultsTable

log = logging.getLogger("llmbatch.store")

#: Write request units per KB of an item written in a transaction (twice a plain write's).
TRANSACTION_WRITE_UNITS_PER_KB = 2
#: Room kept in each result transaction for its counter update: a counter shard with every
#: count, metering figure and latency bucket (shared/latency.py) at 12 digits is 1,019 B
#: (tests/unit/test_latency_counters.py); twice that, to be safe.
COUNTER_UPDATE_BYTES = 2048
#: What the counter shard's write is metered as, in KB (it stays under 1 KB, as above).
COUNTER_ITEM_KB = 1
#: The results one transaction may hold: the rest of its 100 actions and 4 MB.
RESULTS_MAX_PER_WRITE = TRANSACTION_MAX_ITEMS - 1
RESULTS_MAX_BYTES_PER_WRITE = TRANSACTION_MAX_BYTES - COUNTER_UPDATE_BYTES
#: Cancellation reasons that refuse nothing: the action was fine, its item exists, or try later.
_NOT_REFUSED = frozenset({"None", CONDITION_FAILED}) | RETRYABLE_CODES


@dataclass(frozen=True)
class WriteOutcome:
    #: The given results now stored and counted (each its request's first terminal result).
    written: list[RequestResult]
    #: The given results whose request already had one: neither stored nor counted.
    duplicates: list[RequestResult]
    #: For results of ``written`` that DynamoDB refused: what was stored instead, failed
    #: with ``store_refused`` and the reason.
    refused: list[RequestResult] = field(default_factory=list)
    #: Given results that could not be stored at all, not even so, with the reason.
    unstorable: list[tuple[RequestResult, str]] = field(default_factory=list)


#: A result as given, and as it is stored (fitted to an item, or the refused stand-in).
_Pair = tuple[RequestResult, RequestResult]


def result_write_bytes(result: RequestResult) -> int:
    """What a result adds to its transaction's 4 MB, at most: its item's size, which fitting
    to the item limit only ever brings down, to that limit at most."""
    return min(result_bytes(result), ITEM_MAX_BYTES)


class TerminalWrite:
    """One ``ResultsTable.write_terminal`` call: its results of one job, and what became of them."""

    def __init__(self, table: ResultsTable, job_id: str, give_up_at: float | None) -> None:
        self._table = table
        self._job_id = job_id
        self._give_up_at = give_up_at
        self._written: list[RequestResult] = []
        self._duplicates: list[RequestResult] = []
        self._refused: list[RequestResult] = []
        self._unstorable: list[tuple[RequestResult, str]] = []

    async def run(self, results: Sequence[RequestResult]) -> WriteOutcome:
        if len(results) > RESULTS_MAX_PER_WRITE:
            raise ValueError(f"at most {RESULTS_MAX_PER_WRITE} results per call")
        # A message delivered twice in one batch: DynamoDB refuses two actions on one item
        # in a transaction, so the later copies are duplicates before we even ask.
        seen: set[str] = set()
        firsts: list[RequestResult] = []
        for r in results:
            if r.custom_id in seen:
                self._duplicates.append(r)
            else:
                seen.add(r.custom_id)
                firsts.append(r)
        fitted = await asyncio.gather(*(fit_item(r, self._table.payloads) for r in firsts))
        pairs = list(zip(firsts, fitted, strict=True))
        for chunk in _pack(pairs):
            await self._write(chunk)
        return WriteOutcome(self._written, self._duplicates, self._refused, self._unstorable)

    async def _write(self, pending: list[_Pair], *, last_resort: bool = False) -> None:
        """One transaction's worth of results. ``last_resort``: these are already the
        stand-ins of refused results."""
        backoff = self._table.dynamo.backoff(self._give_up_at)
        while pending:
            try:
                await self._table.dynamo.call("transact_write_items", TransactItems=self._transaction(pending))
            except ClientError as e:
                code, reasons = error_parts(e)
                existing = {i for i, r in enumerate(reasons[: len(pending)]) if r.get("Code") == CONDITION_FAILED}
                if existing:
                    self._duplicates += [given for i, (given, _) in enumerate(pending) if i in existing]
                    pending = [p for i, p in enumerate(pending) if i not in existing]
                    continue
                refusals = {i: r for i, r in enumerate(reasons) if r.get("Code") not in _NOT_REFUSED}
                if code == VALIDATION_CODE or refusals:
                    await self._split(pending, e, refusals, last_resort=last_resort)
                    return
                if code in RETRYABLE_CODES or any(r.get("Code") in RETRYABLE_CODES for r in reasons):
                    await backoff.wait(f"DynamoDB write failed: {code}: {e}", "store_write")
                    continue
                raise TransientError(f"DynamoDB write failed: {code}: {e}", code="store_write") from e
            self._written += [given for given, _ in pending]
            if last_resort:
                self._refused += [stored for _, stored in pending]
            return

    async def _split(
        self, pending: list[_Pair], e: ClientError, refusals: dict[int, dict[str, Any]], *, last_resort: bool
    ) -> None:
        """A refused transaction: the refused results alone, the others together, and a
        refused result alone stored as ``store_refused`` (or, if even that is refused,
        reported unstorable)."""
        if len(pending) == 1:
            given, _ = pending[0]
            reason = reason_text(e, refusals.get(0))
            where = {"job_id": self._job_id, "custom_id": given.custom_id, "reason": reason}
            if last_resort:
                log.error("result not stored", extra=where)
                self._unstorable.append((given, reason))
                return
            log.warning("result refused by DynamoDB: stored as store_refused", extra=where)
            await self._write([(given, refused_item(given, reason))], last_resort=True)
            return
        named = [i for i in refusals if i < len(pending)]
        if named:  # the reasons name the refused results
            parts = [[pending[i]] for i in named] + [[p for i, p in enumerate(pending) if i not in refusals]]
        else:  # the whole request was refused (a ValidationException): bisect
            half = len(pending) // 2
            parts = [pending[:half], pending[half:]]
        for part in parts:
            if part:
                await self._write(part, last_resort=last_resort)

    def _transaction(self, pending: Sequence[_Pair]) -> list[dict[str, Any]]:
        results = [stored for _, stored in pending]
        items = [r.to_item() for r in results]
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table.name,
                    "Item": to_ddb(item),
                    "ConditionExpression": "attribute_not_exists(custom_id)",
                }
            }
            for item in items
        ]
        actions.append({"Update": self._counter_update(results)})
        return actions

    def _counter_update(self, results: Sequence[RequestResult]) -> dict[str, Any]:
        """The counter shard's update: counts, tokens and metering, and the latency figures
        of the answered requests (:mod:`shared.latency`), all ADDed in the transaction that
        stores the results, so they move exactly when the results are first stored."""
        delta = Counter(r.status for r in results)
        # What the transaction costs, for the job's estimate; the counter update itself is
        # one more small transactional write.
        write_units = TRANSACTION_WRITE_UNITS_PER_KB * (
            COUNTER_ITEM_KB + sum(math.ceil(result_bytes(r) / 1024) for r in results)
        )
        values: dict[str, Any] = {
            ":s": delta[RequestStatus.SUCCEEDED],
            ":f": delta[RequestStatus.FAILED],
            ":c": delta[RequestStatus.CANCELLED],
            ":p": sum(r.usage.prompt_tokens for r in results),
            ":o": sum(r.usage.completion_tokens for r in results),
            ":w": write_units,
            ":k": sum(1 for r in results if r.response_ref),
            ":t": utc_now_iso(),
        }
        adds = [
            "succeeded :s",
            "failed :f",
            "cancelled :c",
            "prompt_tokens :p",
            "completion_tokens :o",
            "write_units :w",
            "offloaded :k",
        ]
        sets = [f"{LAST_FINISHED} = :t"]
        names: dict[str, str] = {}
        # Latency of answered requests only: a failure can be reopened by `retry`, which
        # takes back its count but could not take back its latency.
        figures, first_start = counter_update(
            (r.latency_ms for r in results if r.status is RequestStatus.SUCCEEDED),
            (started_at(r.finished_at, r.latency_ms) for r in results),
        )
        for i, (name, n) in enumerate(sorted(figures.items())):
            names[f"#l{i}"] = name
            values[f":l{i}"] = n
            adds.append(f"#l{i} :l{i}")
        if first_start:
            # The shard's first write keeps its start: the job's first start is the earliest
            # over the shards (DynamoDB has no min(); this is the cheap near-min).
            sets.append(f"{FIRST_STARTED} = if_not_exists({FIRST_STARTED}, :b)")
            values[":b"] = first_start
        update: dict[str, Any] = {
            "TableName": self._table.jobs.name,
            "Key": self._table.jobs.counter_key(self._job_id),
            "UpdateExpression": "ADD " + ", ".join(adds) + " SET " + ", ".join(sets),
            "ExpressionAttributeValues": to_ddb(values),
        }
        if names:
            update["ExpressionAttributeNames"] = names
        return update


def _pack(pairs: list[_Pair]) -> list[list[_Pair]]:
    """Fitted results in transactions of at most 99 results and 4 MB with the counter update."""
    chunks: list[list[_Pair]] = []
    current: list[_Pair] = []
    size = 0
    for pair in pairs:
        n = result_bytes(pair[1])
        if current and (len(current) >= RESULTS_MAX_PER_WRITE or size + n > RESULTS_MAX_BYTES_PER_WRITE):
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += n
    if current:
        chunks.append(current)
    return chunks
