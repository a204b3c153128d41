"""DynamoDB: job records, their counters and the request results.

Tables (see the README's "Storage" section):

* jobs table, key ``job_id`` + ``item``: ``meta`` (the job), ``count#N`` (counter shards,
  summed on read so concurrent workers do not all write one hot item), ``retry#CUSTOM_ID``
  (the last transient error of a request still being retried).
* results table, key ``job_id`` + ``custom_id``: one item per request in a terminal state.

A terminal result and its counter increment are written in one transaction whose puts are
conditional on the result not existing yet: a duplicate delivery can neither overwrite an
answer nor count twice. (BatchWriteItem has no conditions, so it cannot make that promise;
it is used for the retry notes, where last-writer-wins is what we want.)
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from shared.errors import JobNotFoundError, TransientError
from shared.jobs import Counts, JobMeta, JobStatus, Metering
from shared.payloads import PayloadStore
from shared.results import RequestResult, RequestStatus, utc_now_iso

_ser = TypeSerializer()
_de = TypeDeserializer()

#: DynamoDB's own limits.
TRANSACTION_MAX_ITEMS = 100
TRANSACTION_MAX_BYTES = 4_000_000
BATCH_WRITE_MAX_ITEMS = 25
BATCH_GET_MAX_KEYS = 100
#: Write request units per KB of an item written in a transaction (twice a plain write's).
TRANSACTION_WRITE_UNITS_PER_KB = 2
#: What ``add_metering`` costs: a transactional condition check and update of small items.
METERING_WRITE_UNITS = 2 * TRANSACTION_WRITE_UNITS_PER_KB

RETRYABLE_CODES = frozenset(
    {
        "TransactionConflict",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)


def to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def from_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; our items hold whole numbers only."""
    from decimal import Decimal

    return int(value) if isinstance(value, Decimal) else value


async def backoff_sleep(attempt: int, *, base_s: float = 0.05, cap_s: float = 2.0) -> None:
    """Full-jitter exponential backoff."""
    await asyncio.sleep(random.uniform(0, min(cap_s, base_s * 2**attempt)))


@dataclass(frozen=True)
class WriteOutcome:
    written: list[RequestResult]
    duplicates: list[RequestResult]


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

    async def _call(self, op: str, **kwargs: Any) -> Any:
        self.calls[op] += 1
        return await getattr(self._ddb, op)(**kwargs)

    # ---- jobs ---------------------------------------------------------------------------

    async def create_job(self, meta: JobMeta) -> None:
        item = {
            "job_id": meta.job_id,
            "item": "meta",
            "total": meta.total,
            "name": meta.name,
            "endpoint": meta.endpoint,
            "created_at": meta.created_at,
            "sealed": meta.sealed,
            "enqueued": meta.enqueued,
            "cancel_requested": meta.cancel_requested,
        }
        await self._call(
            "put_item",
            TableName=self.jobs_table,
            Item=to_ddb(item),
            ConditionExpression="attribute_not_exists(job_id)",
        )

    async def record_enqueued(self, job_id: str, count: int, *, sealed: bool) -> None:
        await self._call(
            "update_item",
            TableName=self.jobs_table,
            Key=to_ddb({"job_id": job_id, "item": "meta"}),
            UpdateExpression="SET enqueued = :n, sealed = :s",
            ExpressionAttributeValues=to_ddb({":n": count, ":s": sealed}),
        )

    async def request_cancel(self, job_id: str) -> None:
        """Flag the job: workers record its remaining requests as cancelled, uncalled."""
        try:
            await self._call(
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
        resp = await self._call(
            "query",
            TableName=self.jobs_table,
            KeyConditionExpression="job_id = :j AND #i BETWEEN :lo AND :hi",
            ExpressionAttributeNames={"#i": "item"},
            ExpressionAttributeValues=to_ddb({":j": job_id, ":lo": "count#", ":hi": "meta"}),
            ConsistentRead=True,
        )
        items = [from_ddb(i) for i in resp.get("Items", [])]
        meta_items = [i for i in items if i["item"] == "meta"]
        if not meta_items:
            raise JobNotFoundError(f"no job {job_id!r}")
        counts, metering = Counts(), Metering()
        for i in items:
            if i["item"].startswith("count#"):
                counts = counts + _counts_from_item(i)
                metering = metering + _metering_from_item(i)
        return JobStatus(_meta_from_item(meta_items[0]), counts, metering)

    async def list_jobs(self, limit: int = 100) -> list[JobStatus]:
        """Every job, newest first (the jobs table is small: one meta item per job)."""
        metas: list[JobMeta] = []
        kwargs: dict[str, Any] = {
            "TableName": self.jobs_table,
            "FilterExpression": "#i = :m",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": to_ddb({":m": "meta"}),
        }
        while True:
            resp = await self._call("scan", **kwargs)
            metas.extend(_meta_from_item(from_ddb(i)) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        metas.sort(key=lambda m: (m.created_at, m.job_id), reverse=True)
        return list(await asyncio.gather(*(self.get_job(m.job_id) for m in metas[:limit])))

    async def known_jobs(self, job_ids: Iterable[str]) -> dict[str, JobMeta]:
        keys = [{"job_id": j, "item": "meta"} for j in set(job_ids)]
        found = await self._batch_get(self.jobs_table, keys)
        return {i["job_id"]: _meta_from_item(i) for i in found}

    # ---- results ------------------------------------------------------------------------

    async def stored_results(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (job_id, custom_id) pairs already have a terminal result."""
        wanted = [{"job_id": j, "custom_id": c} for j, c in set(keys)]
        found = await self._batch_get(self.results_table, wanted, projection="job_id, custom_id")
        return {(i["job_id"], i["custom_id"]) for i in found}

    async def _batch_get(
        self, table: str, keys: list[dict[str, Any]], projection: str | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_MAX_KEYS):
            request: dict[str, Any] = {"Keys": [to_ddb(k) for k in keys[start : start + BATCH_GET_MAX_KEYS]]}
            if projection:
                request["ProjectionExpression"] = projection
            pending: dict[str, Any] = {table: request}
            attempt = 0
            while pending:
                resp = await self._call("batch_get_item", RequestItems=pending)
                out.extend(from_ddb(i) for i in resp.get("Responses", {}).get(table, []))
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    attempt += 1
                    if attempt >= self._max_attempts:
                        raise TransientError("DynamoDB kept keys unprocessed", code="unprocessed_keys")
                    await backoff_sleep(attempt)
        return out

    async def write_terminal(self, job_id: str, results: Sequence[RequestResult]) -> WriteOutcome:
        """Store first terminal results of one job and move its counters, atomically.

        Results that already exist are duplicates: they are dropped, not counted.
        At most 99 results per call (one action is the counter update).
        """
        if len(results) > TRANSACTION_MAX_ITEMS - 1:
            raise ValueError("at most 99 results per transaction")
        # A message delivered twice in one batch: DynamoDB refuses two actions on one item
        # in a transaction, so the later copies are duplicates before we even ask.
        remaining: list[RequestResult] = []
        duplicates: list[RequestResult] = []
        seen: set[str] = set()
        for r in results:
            (duplicates if r.custom_id in seen else remaining).append(r)
            seen.add(r.custom_id)
        remaining = [await self._fit_item_limit(r) for r in remaining]
        attempt = 0
        while remaining:
            try:
                await self._call("transact_write_items", TransactItems=self._transaction(job_id, remaining))
                return WriteOutcome(written=remaining, duplicates=duplicates)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                reasons = e.response.get("CancellationReasons") or []
                if code == "TransactionCanceledException" and reasons:
                    failed = {
                        i for i, r in enumerate(reasons[: len(remaining)]) if r.get("Code") == "ConditionalCheckFailed"
                    }
                    if failed:
                        duplicates += [r for i, r in enumerate(remaining) if i in failed]
                        remaining = [r for i, r in enumerate(remaining) if i not in failed]
                        continue
                    retryable = any(r.get("Code") in RETRYABLE_CODES for r in reasons)
                else:
                    retryable = code in RETRYABLE_CODES
                attempt += 1
                if not retryable or attempt >= self._max_attempts:
                    raise TransientError(f"DynamoDB write failed: {code}: {e}", code="store_write") from e
                await backoff_sleep(attempt)
        return WriteOutcome(written=[], duplicates=duplicates)

    async def _fit_item_limit(self, result: RequestResult) -> RequestResult:
        """An answer too big for one item goes to the payload bucket and the item keeps its
        key (the claim check); with no bucket it is recorded as failed
        (``response_too_large``) with its status code, rather than failing its whole
        transaction again and again."""
        body = result.to_item().get("response_body", "")
        if len(body.encode()) + len(result.error_message or "") <= ITEM_BODY_LIMIT_BYTES:
            return result
        if self.payloads is not None:
            key = await self.payloads.put(f"results/{result.job_id}/{result.custom_id}.json", body.encode())
            return replace(result, response_body=None, response_ref=key)
        return replace(
            result,
            status=RequestStatus.FAILED,
            response_body=None,
            error_code="response_too_large",
            error_message=f"the response ({len(body)} bytes) is over DynamoDB's item limit",
        )

    def _transaction(self, job_id: str, results: Sequence[RequestResult]) -> list[dict[str, Any]]:
        items = [r.to_item() for r in results]
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.results_table,
                    "Item": to_ddb(item),
                    "ConditionExpression": "attribute_not_exists(custom_id)",
                }
            }
            for item in items
        ]
        delta = Counter(r.status for r in results)
        # What the transaction costs, for the job's estimate; the counter update itself is
        # one more small transactional write.
        write_units = TRANSACTION_WRITE_UNITS_PER_KB * (1 + sum(math.ceil(item_bytes(i) / 1024) for i in items))
        actions.append(
            {
                "Update": {
                    "TableName": self.jobs_table,
                    "Key": to_ddb({"job_id": job_id, "item": f"count#{random.randrange(self._shards)}"}),
                    "UpdateExpression": "ADD succeeded :s, failed :f, cancelled :c, "
                    "prompt_tokens :p, completion_tokens :o, write_units :w, offloaded :k SET updated_at = :t",
                    "ExpressionAttributeValues": to_ddb(
                        {
                            ":s": delta[RequestStatus.SUCCEEDED],
                            ":f": delta[RequestStatus.FAILED],
                            ":c": delta[RequestStatus.CANCELLED],
                            ":p": sum(r.usage.prompt_tokens for r in results),
                            ":o": sum(r.usage.completion_tokens for r in results),
                            ":w": write_units,
                            ":k": sum(1 for r in results if r.response_ref),
                            ":t": utc_now_iso(),
                        }
                    ),
                }
            }
        )
        return actions

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
                await self._call(
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
                                "Key": to_ddb({"job_id": job_id, "item": f"count#{random.randrange(self._shards)}"}),
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

    async def items_with_prefix(self, prefix: str, job_id: str | None = None) -> list[dict[str, Any]]:
        """Jobs-table items whose ``item`` starts with ``prefix``: of one job (a query), or of
        every job (a scan; the jobs table is small)."""
        names = {"#i": "item"}
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
        items: list[dict[str, Any]] = []
        while True:
            resp = await self._call(op, **kwargs)
            items.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def retry_note(self, job_id: str, custom_id: str) -> dict[str, Any] | None:
        resp = await self._call(
            "get_item", TableName=self.jobs_table, Key=to_ddb({"job_id": job_id, "item": f"retry#{custom_id}"})
        )
        return from_ddb(resp["Item"]) if "Item" in resp else None

    async def reopen(self, job_id: str, custom_id: str) -> bool:
        """Take back a failure so the request can run again: delete its result and its
        count in one transaction. False if there was no failure to reopen."""
        try:
            await self._call(
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
                            "Key": to_ddb({"job_id": job_id, "item": f"count#{random.randrange(self._shards)}"}),
                            "UpdateExpression": "ADD failed :m",
                            "ExpressionAttributeValues": to_ddb({":m": -1}),
                        }
                    },
                ],
            )
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                return False
            raise

    async def forget_dead_letter(self, job_id: str, key: str) -> None:
        await self._call(
            "delete_item", TableName=self.jobs_table, Key=to_ddb({"job_id": job_id, "item": f"dead#{key}"})
        )

    async def batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying UnprocessedItems with backoff."""
        for start in range(0, len(requests), BATCH_WRITE_MAX_ITEMS):
            pending: dict[str, Any] = {table: requests[start : start + BATCH_WRITE_MAX_ITEMS]}
            attempt = 0
            while pending:
                resp = await self._call("batch_write_item", RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if pending:
                    attempt += 1
                    if attempt >= self._max_attempts:
                        raise TransientError("DynamoDB kept items unprocessed", code="unprocessed_items")
                    await backoff_sleep(attempt)

    async def iter_results(self, job_id: str) -> AsyncIterator[RequestResult]:
        kwargs: dict[str, Any] = {
            "TableName": self.results_table,
            "KeyConditionExpression": "job_id = :j",
            "ExpressionAttributeValues": to_ddb({":j": job_id}),
        }
        while True:
            resp = await self._call("query", **kwargs)
            for item in resp.get("Items", []):
                yield RequestResult.from_item(from_ddb(item))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


#: DynamoDB's item limit is 400 KB; leave room for attribute names and the other fields.
ITEM_BODY_LIMIT_BYTES = 390_000


def item_bytes(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it for capacity units, closely enough: each
    attribute's name plus its value (text as UTF-8, a number about as many bytes as digits)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        size += len(value.encode()) if isinstance(value, str) else len(str(value))
    return size


def _counts_from_item(i: dict[str, Any]) -> Counts:
    return Counts(
        succeeded=_plain(i.get("succeeded", 0)),
        failed=_plain(i.get("failed", 0)),
        cancelled=_plain(i.get("cancelled", 0)),
        prompt_tokens=_plain(i.get("prompt_tokens", 0)),
        completion_tokens=_plain(i.get("completion_tokens", 0)),
    )


def _metering_from_item(i: dict[str, Any]) -> Metering:
    return Metering(**{name: _plain(i.get(name, 0)) for name in asdict(Metering())})


def _meta_from_item(i: dict[str, Any]) -> JobMeta:
    return JobMeta(
        job_id=i["job_id"],
        total=_plain(i["total"]),
        name=i.get("name", ""),
        endpoint=i.get("endpoint", "default"),
        created_at=i.get("created_at", ""),
        sealed=bool(i.get("sealed", False)),
        enqueued=_plain(i.get("enqueued", 0)),
        cancel_requested=bool(i.get("cancel_requested", False)),
    )
