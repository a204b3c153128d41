"""DynamoDB: job records, their counters and the request results.

Tables (see the README's "Storage" section):

* jobs table, key ``job_id`` + ``item``: ``meta`` (the job; it alone carries ``kind`` =
  ``job``, the key of the sparse index ``jobs-by-created`` that lists jobs), ``count#N``
  (counter shards, summed on read so concurrent workers do not all write one hot item),
  ``retry#CUSTOM_ID`` (the last transient error of a request still being retried),
  ``dead#KEY`` (dead letters). A job is read by key and by the ``count#`` prefix, never by
  a range that would also read its dead letters.
* results table, key ``job_id`` + ``custom_id``: one item per request in a terminal state.

A terminal result and its counter increment are written in one transaction whose puts are
conditional on the result not existing yet: a duplicate delivery can neither overwrite an
answer nor count twice (:mod:`shared.store.terminal_writes`). BatchWriteItem has no conditions,
so it cannot make that promise; it is used for the retry notes and dead letters, where
last-writer-wins is what we want.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from shared.errors import JobNotFoundError
from shared.jobs import Counts, JobMeta, JobStatus, Metering
from shared.payloads import PayloadStore
from shared.results import RequestResult
from shared.store.item_size import from_ddb as from_ddb
from shared.store.item_size import item_bytes as item_bytes
from shared.store.item_size import to_ddb as to_ddb
from shared.store.retry import CONDITION_FAILED, VALIDATION_CODE, Backoff, error_parts, is_retryable
from shared.store.terminal_writes import TRANSACTION_WRITE_UNITS_PER_KB as TRANSACTION_WRITE_UNITS_PER_KB
from shared.store.terminal_writes import TerminalWrite, WriteOutcome

log = logging.getLogger("llmbatch.store")

BATCH_WRITE_MAX_ITEMS = 25
BATCH_GET_MAX_KEYS = 100
#: What ``add_metering`` costs: a transactional condition check and update of small items.
METERING_WRITE_UNITS = 2 * TRANSACTION_WRITE_UNITS_PER_KB
#: The sparse index of the jobs table listing jobs newest first (template.yaml): only
#: ``meta`` items carry its partition key ``kind``.
JOBS_INDEX = "jobs-by-created"
JOB_KIND = "job"


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; our items hold whole numbers only."""
    return int(value) if isinstance(value, Decimal) else value


class ResultStore:
    """Reads and writes jobs and results through an aiobotocore DynamoDB client."""

    def __init__(
        self,
        ddb: Any,
        *,
        jobs_table: str,
        results_table: str,
        counter_shards: int = 8,
        max_attempts: int = 8,
        payloads: PayloadStore | None = None,
    ) -> None:
        self._ddb = ddb
        self.payloads = payloads
        self.jobs_table = jobs_table
        self.results_table = results_table
        self._shards = max(1, counter_shards)
        self._max_attempts = max_attempts
        #: Calls made, by operation: the benchmark reports AWS calls per request.
        self.calls: Counter[str] = Counter()

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One DynamoDB call, counted."""
        self.calls[op] += 1
        return await getattr(self._ddb, op)(**kwargs)

    def backoff(self, give_up_at: float | None = None) -> Backoff:
        """Backoff for one operation: the store's ``max_attempts``, or until ``give_up_at``."""
        return Backoff(self._max_attempts, give_up_at)

    def counter_key(self, job_id: str) -> dict[str, Any]:
        """A random counter shard of the job."""
        return to_ddb({"job_id": job_id, "item": f"count#{random.randrange(self._shards)}"})

    # ---- jobs ---------------------------------------------------------------------------

    async def create_job(self, meta: JobMeta) -> None:
        item = {k: v for k, v in asdict(meta).items() if v is not None}
        item["item"] = "meta"
        if meta.created_at:  # an index key may not be empty
            item["kind"] = JOB_KIND
        await self.call(
            "put_item",
            TableName=self.jobs_table,
            Item=to_ddb(item),
            ConditionExpression="attribute_not_exists(job_id)",
        )

    async def record_enqueued(self, job_id: str, count: int, *, sealed: bool) -> None:
        await self.call(
            "update_item",
            TableName=self.jobs_table,
            Key=to_ddb({"job_id": job_id, "item": "meta"}),
            UpdateExpression="SET enqueued = :n, sealed = :s",
            ExpressionAttributeValues=to_ddb({":n": count, ":s": sealed}),
        )

    async def request_cancel(self, job_id: str) -> None:
        """Flag the job: workers record its remaining requests as cancelled, uncalled."""
        try:
            await self.call(
                "update_item",
                TableName=self.jobs_table,
                Key=to_ddb({"job_id": job_id, "item": "meta"}),
                UpdateExpression="SET cancel_requested = :t",
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeValues=to_ddb({":t": True}),
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise JobNotFoundError(f"no job {job_id!r}") from e
            raise

    async def get_job(self, job_id: str) -> JobStatus:
        """The job's record and its summed counters, read consistently: the meta item by
        key, the counter shards by their prefix (dead letters and retry notes, which sort
        between them, are never read)."""
        meta_resp, shards = await asyncio.gather(
            self.call(
                "get_item",
                TableName=self.jobs_table,
                Key=to_ddb({"job_id": job_id, "item": "meta"}),
                ConsistentRead=True,
            ),
            self.items_with_prefix("count#", job_id, consistent=True),
        )
        if "Item" not in meta_resp:
            raise JobNotFoundError(f"no job {job_id!r}")
        counts, metering = Counts(), Metering()
        for i in shards:
            counts = counts + _counts_from_item(i)
            metering = metering + _metering_from_item(i)
        return JobStatus(_meta_from_item(from_ddb(meta_resp["Item"])), counts, metering)

    async def list_jobs(self, limit: int = 100) -> list[JobStatus]:
        """The newest ``limit`` jobs, newest first: from the jobs table's sparse index, or,
        on a stack made before it existed, by scanning the table."""
        try:
            job_ids = await self._newest_jobs(limit)
        except ClientError as e:
            code, _ = error_parts(e)
            # AWS says ValidationException, moto ResourceNotFoundException
            if code not in (VALIDATION_CODE, "ResourceNotFoundException") or "index" not in str(e).lower():
                raise
            log.warning("the jobs table has no %s index: scanning it", JOBS_INDEX)
            job_ids = await self._scan_jobs(limit)
        return list(await asyncio.gather(*(self.get_job(j) for j in job_ids)))

    async def _newest_jobs(self, limit: int) -> list[str]:
        kwargs: dict[str, Any] = {
            "TableName": self.jobs_table,
            "IndexName": JOBS_INDEX,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": "kind"},
            "ExpressionAttributeValues": to_ddb({":k": JOB_KIND}),
            "ScanIndexForward": False,
        }
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            resp = await self.call("query", **kwargs, Limit=limit - len(found))
            found.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        found.sort(key=lambda i: (i.get("created_at", ""), i["job_id"]), reverse=True)
        return [i["job_id"] for i in found]

    async def _scan_jobs(self, limit: int) -> list[str]:
        kwargs: dict[str, Any] = {
            "TableName": self.jobs_table,
            "FilterExpression": "#i = :m",
            "ProjectionExpression": "job_id, created_at",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": to_ddb({":m": "meta"}),
        }
        metas: list[dict[str, Any]] = []
        while True:
            resp = await self.call("scan", **kwargs)
            metas.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        metas.sort(key=lambda i: (i.get("created_at", ""), i["job_id"]), reverse=True)
        return [i["job_id"] for i in metas[:limit]]

    async def known_jobs(self, job_ids: Iterable[str]) -> dict[str, JobMeta]:
        keys = [{"job_id": j, "item": "meta"} for j in set(job_ids)]
        found = await self._batch_get(self.jobs_table, keys)
        return {i["job_id"]: _meta_from_item(i) for i in found}

    # ---- results ------------------------------------------------------------------------

    async def stored_results(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (job_id, custom_id) pairs already have a terminal result (a consistent read:
        it gates model calls and redrive)."""
        wanted = [{"job_id": j, "custom_id": c} for j, c in set(keys)]
        found = await self._batch_get(self.results_table, wanted, projection="job_id, custom_id")
        return {(i["job_id"], i["custom_id"]) for i in found}

    async def _batch_get(
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

    async def write_terminal(
        self, job_id: str, results: Sequence[RequestResult], *, give_up_at: float | None = None
    ) -> WriteOutcome:
        """Store first terminal results of one job (at most 99) and move its counters.

        Results that already exist are duplicates: neither stored nor counted. A result
        DynamoDB refuses is stored as failed (``store_refused``) without costing the others
        theirs; throttled writes are retried until ``give_up_at`` (monotonic time) when
        given, else up to ``max_attempts``. See :mod:`shared.store.terminal_writes`.
        """
        return await TerminalWrite(self, job_id, give_up_at).run(results)

    async def add_metering(self, usage: Mapping[str, Metering]) -> None:
        """Add one invocation's use of the stack to each job's counters (a random shard).

        Written once per invocation, not with each result transaction: the invocation's
        duration is known only at its end. The condition keeps a message naming a job that
        does not exist from creating counters for it; such a job is skipped.
        """

        async def add(job_id: str, m: Metering) -> None:
            values = {k: v for k, v in asdict(m).items() if v}
            if not values:
                return
            try:
                await self.call(
                    "transact_write_items",
                    TransactItems=[
                        {
                            "ConditionCheck": {
                                "TableName": self.jobs_table,
                                "Key": to_ddb({"job_id": job_id, "item": "meta"}),
                                "ConditionExpression": "attribute_exists(job_id)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.jobs_table,
                                "Key": self.counter_key(job_id),
                                "UpdateExpression": "ADD " + ", ".join(f"{k} :{k}" for k in values),
                                "ExpressionAttributeValues": to_ddb({f":{k}": v for k, v in values.items()}),
                            }
                        },
                    ],
                )
            except ClientError as e:
                reasons = e.response.get("CancellationReasons") or []
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return
                raise

        await asyncio.gather(*(add(job_id, m) for job_id, m in usage.items()))

    async def note_retries(self, notes: Sequence[dict[str, Any]]) -> None:
        """Remember the last transient error of requests that go back to the queue."""
        requests = [{"PutRequest": {"Item": to_ddb({**n, "item": f"retry#{n['custom_id']}"})}} for n in notes]
        await self.batch_write(self.jobs_table, requests)

    async def items_with_prefix(
        self, prefix: str, job_id: str | None = None, *, consistent: bool = False
    ) -> list[dict[str, Any]]:
        """Jobs-table items whose ``item`` starts with ``prefix``: of one job (a query, every
        page), or of every job (a scan)."""
        names = {"#i": "item"}
        kwargs: dict[str, Any]
        if job_id:
            op, kwargs = (
                "query",
                {
                    "KeyConditionExpression": "job_id = :j AND begins_with(#i, :p)",
                    "ExpressionAttributeValues": to_ddb({":j": job_id, ":p": prefix}),
                },
            )
        else:
            op, kwargs = (
                "scan",
                {
                    "FilterExpression": "begins_with(#i, :p)",
                    "ExpressionAttributeValues": to_ddb({":p": prefix}),
                },
            )
        kwargs.update(TableName=self.jobs_table, ExpressionAttributeNames=names)
        if consistent:
            kwargs["ConsistentRead"] = True
        items: list[dict[str, Any]] = []
        while True:
            resp = await self.call(op, **kwargs)
            items.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def retry_note(self, job_id: str, custom_id: str) -> dict[str, Any] | None:
        resp = await self.call(
            "get_item", TableName=self.jobs_table, Key=to_ddb({"job_id": job_id, "item": f"retry#{custom_id}"})
        )
        return from_ddb(resp["Item"]) if "Item" in resp else None

    async def reopen(self, job_id: str, custom_id: str) -> bool:
        """Take back a failure so the request can run again: delete its result and its
        count in one transaction. False only if there was no failure to reopen (the
        condition failed); a conflicting or throttled transaction is tried again, and
        ``TransientError`` raised if it keeps failing so."""
        backoff = self.backoff()
        while True:
            try:
                await self.call(
                    "transact_write_items",
                    TransactItems=[
                        {
                            "Delete": {
                                "TableName": self.results_table,
                                "Key": to_ddb({"job_id": job_id, "custom_id": custom_id}),
                                "ConditionExpression": "#s = :f",
                                "ExpressionAttributeNames": {"#s": "status"},
                                "ExpressionAttributeValues": to_ddb({":f": "failed"}),
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.jobs_table,
                                "Key": self.counter_key(job_id),
                                "UpdateExpression": "ADD failed :m",
                                "ExpressionAttributeValues": to_ddb({":m": -1}),
                            }
                        },
                    ],
                )
                return True
            except ClientError as e:
                _, reasons = error_parts(e)
                if reasons and reasons[0].get("Code") == CONDITION_FAILED:
                    return False
                if is_retryable(e):
                    await backoff.wait(f"could not reopen {custom_id!r}: {e}", "store_reopen")
                    continue
                raise

    async def forget_dead_letter(self, job_id: str, key: str) -> None:
        await self.call("delete_item", TableName=self.jobs_table, Key=to_ddb({"job_id": job_id, "item": f"dead#{key}"}))

    async def iter_results(self, job_id: str) -> AsyncIterator[RequestResult]:
        kwargs: dict[str, Any] = {
            "TableName": self.results_table,
            "KeyConditionExpression": "job_id = :j",
            "ExpressionAttributeValues": to_ddb({":j": job_id}),
        }
        while True:
            resp = await self.call("query", **kwargs)
            for item in resp.get("Items", []):
                yield RequestResult.from_item(from_ddb(item))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def _counts_from_item(i: dict[str, Any]) -> Counts:
    return Counts(**{name: _plain(i.get(name, 0)) for name in asdict(Counts())})


def _metering_from_item(i: dict[str, Any]) -> Metering:
    return Metering(**{name: _plain(i.get(name, 0)) for name in asdict(Metering())})


def _meta_from_item(i: dict[str, Any]) -> JobMeta:
    """Every field of JobMeta the item holds (older items lack newer fields: their defaults)."""
    return JobMeta(**{f.name: _plain(i[f.name]) for f in fields(JobMeta) if f.name in i})
