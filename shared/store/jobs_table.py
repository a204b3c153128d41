"""The jobs table: each job's record, its counters, retry notes and dead letters.

Key ``job_id`` + ``item`` (see the README's "Storage" section): ``meta`` (the job; it alone
carries ``kind`` = ``job``, the key of the sparse index ``jobs-by-created`` that lists jobs),
``count#N`` (counter shards, summed on read so concurrent workers do not all write one hot
item), ``retry#CUSTOM_ID`` (the last transient error of a request still being retried),
``dead#KEY`` (dead letters). A job is read by key and by the ``count#`` prefix, never by a
range that would also read its dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from shared.errors import JobNotFoundError
from shared.jobs import Counts, JobMeta, JobStatus, Metering
from shared.latency import JobTiming
from shared.store.dynamo import DynamoClient
from shared.store.item_size import from_ddb, to_ddb
from shared.store.retry import VALIDATION_CODE, error_parts
from shared.store.terminal_writes import TRANSACTION_WRITE_UNITS_PER_KB

log = logging.getLogger("llmbatch.store")

#: What ``add_metering`` costs: a transactional condition check and update of small items.
METERING_WRITE_UNITS = 2 * TRANSACTION_WRITE_UNITS_PER_KB
#: The sparse index of the jobs table listing jobs newest first (template.yaml): only
#: ``meta`` items carry its partition key ``kind``.
JOBS_INDEX = "jobs-by-created"
JOB_KIND = "job"
#: The counter shards' attributes that decide a job's state (:class:`Counts`).
COUNT_ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in fields(Counts))


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; our items hold whole numbers only."""
    return int(value) if isinstance(value, Decimal) else value


class JobsTable:
    """Reads and writes the jobs table's items through a :class:`DynamoClient`."""

    def __init__(self, dynamo: DynamoClient, name: str, *, counter_shards: int = 8) -> None:
        self.dynamo = dynamo
        self.name = name
        self._shards = max(1, counter_shards)

    def counter_key(self, job_id: str) -> dict[str, Any]:
        """A random counter shard of the job."""
        return to_ddb({"job_id": job_id, "item": f"count#{random.randrange(self._shards)}"})

    # ---- job records --------------------------------------------------------------------

    async def create_job(self, meta: JobMeta) -> None:
        item = {k: v for k, v in asdict(meta).items() if v is not None}
        item["item"] = "meta"
        if meta.created_at:  # an index key may not be empty
            item["kind"] = JOB_KIND
        await self.dynamo.call(
            "put_item",
            TableName=self.name,
            Item=to_ddb(item),
            ConditionExpression="attribute_not_exists(job_id)",
        )

    async def record_enqueued(self, job_id: str, count: int, *, sealed: bool) -> None:
        await self.dynamo.call(
            "update_item",
            TableName=self.name,
            Key=to_ddb({"job_id": job_id, "item": "meta"}),
            UpdateExpression="SET enqueued = :n, sealed = :s",
            ExpressionAttributeValues=to_ddb({":n": count, ":s": sealed}),
        )

    async def request_cancel(self, job_id: str) -> None:
        """Flag the job: workers record its remaining requests as cancelled, uncalled."""
        try:
            await self.dynamo.call(
                "update_item",
                TableName=self.name,
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
        meta, shards = await self._meta_and_shards(job_id)
        counts, metering, timing = Counts(), Metering(), JobTiming()
        for i in shards:
            counts = counts + _counts_from_item(i)
            metering = metering + _metering_from_item(i)
            timing = timing + JobTiming.from_item(i)
        return JobStatus(meta, counts, metering, timing)

    async def get_job_state(self, job_id: str) -> JobStatus:
        """What decides the job's state, read as consistently as :meth:`get_job`: its record and
        its summed :class:`Counts`, the shards read for those attributes only (its metering and
        timing are left empty). A finished-job check runs after every invocation's writes, and
        a shard's latency histogram is most of its attributes: parsing those once per
        invocation is the check's cost, on Lambda's CPU and on the local stack's moto."""
        meta, shards = await self._meta_and_shards(job_id, attributes=COUNT_ATTRIBUTES)
        counts = Counts()
        for i in shards:
            counts = counts + _counts_from_item(i)
        return JobStatus(meta, counts)

    async def _meta_and_shards(
        self, job_id: str, *, attributes: Sequence[str] | None = None
    ) -> tuple[JobMeta, list[dict[str, Any]]]:
        meta_resp, shards = await asyncio.gather(
            self.dynamo.call(
                "get_item",
                TableName=self.name,
                Key=to_ddb({"job_id": job_id, "item": "meta"}),
                ConsistentRead=True,
            ),
            self.items_with_prefix("count#", job_id, consistent=True, attributes=attributes),
        )
        if "Item" not in meta_resp:
            raise JobNotFoundError(f"no job {job_id!r}")
        return _meta_from_item(from_ddb(meta_resp["Item"])), shards

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
            "TableName": self.name,
            "IndexName": JOBS_INDEX,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": "kind"},
            "ExpressionAttributeValues": to_ddb({":k": JOB_KIND}),
            "ScanIndexForward": False,
        }
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            resp = await self.dynamo.call("query", **kwargs, Limit=limit - len(found))
            found.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        found.sort(key=lambda i: (i.get("created_at", ""), i["job_id"]), reverse=True)
        return [i["job_id"] for i in found]

    async def _scan_jobs(self, limit: int) -> list[str]:
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "FilterExpression": "#i = :m",
            "ProjectionExpression": "job_id, created_at",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": to_ddb({":m": "meta"}),
        }
        metas: list[dict[str, Any]] = []
        while True:
            resp = await self.dynamo.call("scan", **kwargs)
            metas.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        metas.sort(key=lambda i: (i.get("created_at", ""), i["job_id"]), reverse=True)
        return [i["job_id"] for i in metas[:limit]]

    async def known_jobs(self, job_ids: Iterable[str]) -> dict[str, JobMeta]:
        keys = [{"job_id": j, "item": "meta"} for j in set(job_ids)]
        found = await self.dynamo.batch_get(self.name, keys)
        return {i["job_id"]: _meta_from_item(i) for i in found}

    # ---- counters, retry notes, dead letters --------------------------------------------

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
                await self.dynamo.call(
                    "transact_write_items",
                    TransactItems=[
                        {
                            "ConditionCheck": {
                                "TableName": self.name,
                                "Key": to_ddb({"job_id": job_id, "item": "meta"}),
                                "ConditionExpression": "attribute_exists(job_id)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.name,
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
        await self.dynamo.batch_write(self.name, requests)

    async def items_with_prefix(
        self,
        prefix: str,
        job_id: str | None = None,
        *,
        consistent: bool = False,
        attributes: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs-table items whose ``item`` starts with ``prefix``: of one job (a query, every
        page), or of every job (a scan); with ``attributes``, only those (and the key)."""
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
        if attributes is not None:
            # Placeholders for every name: a counter may be a reserved word of DynamoDB's.
            placeholders = {f"#a{n}": name for n, name in enumerate(attributes)}
            names.update(placeholders)
            kwargs["ProjectionExpression"] = ", ".join(["job_id", "#i", *placeholders])
        kwargs.update(TableName=self.name, ExpressionAttributeNames=names)
        if consistent:
            kwargs["ConsistentRead"] = True
        items: list[dict[str, Any]] = []
        while True:
            resp = await self.dynamo.call(op, **kwargs)
            items.extend(from_ddb(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def retry_note(self, job_id: str, custom_id: str) -> dict[str, Any] | None:
        resp = await self.dynamo.call(
            "get_item", TableName=self.name, Key=to_ddb({"job_id": job_id, "item": f"retry#{custom_id}"})
        )
        return from_ddb(resp["Item"]) if "Item" in resp else None

    async def forget_dead_letter(self, job_id: str, key: str) -> None:
        await self.dynamo.call(
            "delete_item", TableName=self.name, Key=to_ddb({"job_id": job_id, "item": f"dead#{key}"})
        )


def _counts_from_item(i: dict[str, Any]) -> Counts:
    return Counts(**{name: _plain(i.get(name, 0)) for name in asdict(Counts())})


def _metering_from_item(i: dict[str, Any]) -> Metering:
    return Metering(**{name: _plain(i.get(name, 0)) for name in asdict(Metering())})


def _meta_from_item(i: dict[str, Any]) -> JobMeta:
    """Every field of JobMeta the item holds (older items lack newer fields: their defaults)."""
    return JobMeta(**{f.name: _plain(i[f.name]) for f in fields(JobMeta) if f.name in i})
