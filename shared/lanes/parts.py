"""A batch-lane job's parts: their staged input in the payload bucket, their items in the
jobs table, and the list of jobs with parts still to follow.

Items (jobs table, key ``job_id`` + ``item``):

- ``part#NNNNN`` of the job: one native job's worth of records (see :class:`PartItem`);
  every change of its ``state`` or ``cursor`` is conditional on the value it changes
  from, so runs of the poller that overlap never both act on one step.
- ``job_id`` = ``lane#active``, ``item`` = the job's id: the job has parts not yet done.
  The poller reads this one partition (a query; never a scan) and deletes the job's item
  once all its parts are done: each run is O(active jobs), not O(all jobs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from botocore.exceptions import ClientError

from shared.lanes.native import NativePart, NativeRecord
from shared.payloads import PayloadStore
from shared.store.dynamo import DynamoClient
from shared.store.item_size import from_ddb, to_ddb

PART_PREFIX: Final = "part#"
#: The partition listing the jobs whose parts the poller still follows.
ACTIVE_JOBS: Final = "lane#active"
#: Where a job's staged records live in the payload bucket.
BATCH_PREFIX: Final = "batch/"


class PartState(StrEnum):
    #: Records in the bucket, no native job yet.
    STAGED = "staged"
    #: A run is creating its native job (a lease: another run takes it back after it lapses).
    STARTING = "starting"
    RUNNING = "running"
    #: The native job ended (or never will run): its outcomes are being written, from ``cursor``.
    IMPORTING = "importing"
    DONE = "done"


class Ending(StrEnum):
    """How a part's native job ended, which decides what its records become."""

    #: Outcomes to import (some records may have failed).
    ENDED = "ended"
    #: The whole native job failed: every record failed with its message.
    FAILED = "failed"
    #: Stopped on cancel: finished records' outcomes imported, the others cancelled.
    STOPPED = "stopped"
    #: The job was cancelled before its part started: every record cancelled.
    CANCELLED = "cancelled"


def part_input_key(job_id: str, part: int) -> str:
    return f"{BATCH_PREFIX}{job_id}/part-{part:05d}.jsonl"


def split_records(records: Sequence[NativeRecord], max_records: int) -> list[list[NativeRecord]]:
    """Consecutive records in parts of at most ``max_records``, as even as can be: a run of
    ``n`` records becomes ``ceil(n / max_records)`` parts differing by one record at most, so
    no part is a small remainder (Bedrock refuses a job under its minimum records; with
    ``min_records <= max_records / 2`` every part of a run of ``min_records`` or more meets it).
    A part also ends where the route changes (a native job serves one route)."""
    runs: list[list[NativeRecord]] = []
    for r in records:
        if not runs or runs[-1][-1].url != r.url:
            runs.append([])
        runs[-1].append(r)
    parts: list[list[NativeRecord]] = []
    for run in runs:
        count = math.ceil(len(run) / max_records)
        size, bigger = divmod(len(run), count)
        start = 0
        for n in range(count):
            end = start + size + (1 if n < bigger else 0)
            parts.append(run[start:end])
            start = end
    return parts


def encode_records(records: Iterable[NativeRecord]) -> bytes:
    return "".join(json.dumps(asdict(r), separators=(",", ":")) + "\n" for r in records).encode()


def decode_records(data: bytes) -> list[NativeRecord]:
    return [NativeRecord(**json.loads(line)) for line in data.decode().splitlines() if line.strip()]


@dataclass(frozen=True)
class PartItem:
    job_id: str
    part: int
    endpoint: str
    input_key: str
    records: int
    first_line: int
    state: str = PartState.STAGED.value
    native_id: str = ""
    ending: str = ""
    #: The native job's own words when it failed, or why it could not start.
    message: str = ""
    #: Records whose outcome is written (in input order), while importing.
    cursor: int = 0
    #: The native job's counts, as last read.
    completed: int = 0
    failed: int = 0
    cancel_sent: bool = False
    #: When the ``starting`` lease was taken (epoch seconds).
    claimed_at: float = 0.0

    @property
    def item(self) -> str:
        return f"{PART_PREFIX}{self.part:05d}"

    @property
    def native_part(self) -> NativePart:
        return NativePart(self.job_id, self.endpoint, self.part, self.input_key, self.records)

    def to_item(self) -> dict[str, Any]:
        return {**asdict(self), "item": self.item, "claimed_at": Decimal(str(self.claimed_at))}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PartItem:
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, kind in kinds.items():
            if name not in item:
                continue
            v = item[name]
            if isinstance(v, Decimal):
                v = float(v) if kind == "float" else int(v)
            values[name] = v
        return cls(**values)


class LaneTable:
    """Part items and the active-jobs list, in the jobs table."""

    def __init__(self, dynamo: DynamoClient, table: str) -> None:
        self.dynamo = dynamo
        self.table = table

    async def put_parts(self, parts: Sequence[PartItem]) -> None:
        """New parts; a part already there (a submit run again) is left as it is."""
        for p in parts:
            try:
                await self.dynamo.call(
                    "put_item",
                    TableName=self.table,
                    Item=to_ddb(p.to_item()),
                    ConditionExpression="attribute_not_exists(job_id)",
                )
            except ClientError as e:
                if not _condition_failed(e):
                    raise

    async def mark_active(self, job_id: str) -> None:
        await self.dynamo.call("put_item", TableName=self.table, Item=to_ddb({"job_id": ACTIVE_JOBS, "item": job_id}))

    async def retire(self, job_id: str) -> None:
        await self.dynamo.call("delete_item", TableName=self.table, Key=to_ddb({"job_id": ACTIVE_JOBS, "item": job_id}))

    async def active_jobs(self) -> list[str]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "job_id = :a",
            "ExpressionAttributeValues": to_ddb({":a": ACTIVE_JOBS}),
            "ConsistentRead": True,
        }
        found: list[str] = []
        while True:
            resp = await self.dynamo.call("query", **kwargs)
            found += [str(from_ddb(i)["item"]) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return found
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def parts(self, job_id: str) -> list[PartItem]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "job_id = :j AND begins_with(#i, :p)",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": to_ddb({":j": job_id, ":p": PART_PREFIX}),
            "ConsistentRead": True,
        }
        found: list[PartItem] = []
        while True:
            resp = await self.dynamo.call("query", **kwargs)
            found += [PartItem.from_item(from_ddb(i)) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return sorted(found, key=lambda p: p.part)
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def update(self, part: PartItem, *, expect: dict[str, Any], changes: dict[str, Any]) -> bool:
        """Set ``changes`` on the part if its attributes still hold ``expect``; False when
        another run changed them first (nothing is written then)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, conds = [], []
        for i, (k, v) in enumerate(changes.items()):
            names[f"#c{i}"] = k
            values[f":c{i}"] = Decimal(str(v)) if isinstance(v, float) else v
            sets.append(f"#c{i} = :c{i}")
        for i, (k, v) in enumerate(expect.items()):
            names[f"#e{i}"] = k
            values[f":e{i}"] = Decimal(str(v)) if isinstance(v, float) else v
            conds.append(f"#e{i} = :e{i}")
        try:
            await self.dynamo.call(
                "update_item",
                TableName=self.table,
                Key=to_ddb({"job_id": part.job_id, "item": part.item}),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=" AND ".join(conds) if conds else "attribute_exists(job_id)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_ddb(values),
            )
        except ClientError as e:
            if _condition_failed(e):
                return False
            raise
        return True

    async def set_job_progress(self, job_id: str, figures: dict[str, int]) -> None:
        """The job's native progress on its meta item (what ``status`` shows)."""
        names = {f"#f{i}": k for i, k in enumerate(figures)}
        values = {f":f{i}": v for i, v in enumerate(figures.values())}
        await self.dynamo.call(
            "update_item",
            TableName=self.table,
            Key=to_ddb({"job_id": job_id, "item": "meta"}),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(figures))),
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_ddb(values),
        )


async def stage_parts(
    payloads: PayloadStore,
    lanes: LaneTable,
    *,
    job_id: str,
    endpoint: str,
    records: Sequence[NativeRecord],
    max_records: int,
) -> list[PartItem]:
    """Write each part's records to the payload bucket, then its item, then the job into
    the active list. Each step may be repeated (a submit run again)."""
    items: list[PartItem] = []
    for n, chunk in enumerate(split_records(records, max_records)):
        key = part_input_key(job_id, n)
        await payloads.put(key, encode_records(chunk))
        items.append(PartItem(job_id, n, endpoint, key, len(chunk), chunk[0].line))
    await lanes.put_parts(items)
    await lanes.mark_active(job_id)
    return items


def _condition_failed(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
