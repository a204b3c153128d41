"""The global rate-limit bucket of each endpoint, shared by every invocation through DynamoDB.

Per-invocation limiters multiply the limit by the number of invocations; so every
invocation, in every container, takes its calls from one bucket per endpoint: an item of
the jobs table (``job_id`` = ``ratelimit#ENDPOINT``, ``item`` = ``bucket``; ``list_jobs``
reads ``meta`` items only, so jobs listings never see it). It holds one time per limit
(see :mod:`shared.limits.rate_math`), so a take is one conditional UpdateItem and refilling costs
nothing. Invocations take leases of several calls at once (:mod:`shared.limits.throttle`), so the
bucket costs a few writes per second per container, not one per call.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from shared.errors import TransientError
from shared.limits.rate_math import (
    MICROS_PER_S,
    REQUESTS_ATTR,
    TOKENS_ATTR,
    Dimension,
    TakePlan,
    apply_steps,
    plan_take,
)
from shared.store.item_size import from_ddb, to_ddb

BUCKET_ITEM = "bucket"
BUCKET_ATTRS = frozenset({REQUESTS_ATTR, TOKENS_ATTR})
KEY_PREFIX = "ratelimit#"
#: Conditional writes that may fail in a row, with no wait between them, before giving up.
#: Each failure returns the bucket's state, so the next attempt is exact (or waits); only a
#: crowd of takers all landing at once loses this often, and the record then goes back to SQS.
MAX_RACES_LOST = 10
#: When a record given up after lost races comes back.
RACE_RETRY_S = 1.0


def bucket_key(endpoint: str) -> dict[str, Any]:
    return to_ddb({"job_id": f"{KEY_PREFIX}{endpoint}", "item": BUCKET_ITEM})


class DynamoRateBucket:
    """Takes units from the buckets of endpoints, through an aiobotocore DynamoDB client.

    Container-scoped. It remembers the last state it saw of each bucket (from its own
    writes' ALL_NEW, and a failed write's ALL_OLD) to choose the form of its next take and
    how long to wait, so it reads the item only once, the first time.
    """

    def __init__(
        self,
        ddb: Any,
        table: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._ddb = ddb
        self._table = table
        # Wall-clock time, not monotonic: every container compares its own clock with the
        # times others stored (Lambda hosts keep theirs synchronised by NTP).
        self._clock = clock
        self._sleep = sleep
        self._known: dict[str, dict[str, int]] = {}
        #: Calls made, by operation: the benchmark counts them per request.
        self.calls: Counter[str] = Counter()

    def _now_us(self) -> int:
        return int(self._clock() * MICROS_PER_S)

    async def take(self, endpoint: str, wants: Sequence[tuple[Dimension, int]], *, max_wait_s: float) -> float:
        """Take ``units`` of each ``(dimension, units)`` at once, waiting for the refill as
        long as needed but no longer than ``max_wait_s``; returns the seconds it slept.

        Raises
        ------
        TransientError
            ``rate_limited``: the refill would come too late (or too many others kept taking
            first); nothing was taken, and the caller's record goes back to SQS until then.
        """
        if not any(n > 0 for _, n in wants):
            return 0.0
        if endpoint not in self._known:
            self._known[endpoint] = await self._read(endpoint)
        give_up_at = time.monotonic() + max_wait_s
        slept = 0.0
        lost = 0
        while lost < MAX_RACES_LOST:
            plan = plan_take(self._known[endpoint], wants, self._now_us())
            if plan.create:
                await self._create(endpoint, plan.create)
            elif plan.wait_us:
                wait_s = plan.wait_us / MICROS_PER_S
                if time.monotonic() + wait_s > give_up_at:
                    raise TransientError(
                        f"rate limit of endpoint {endpoint!r}: no capacity for {wait_s:.1f}s, beyond the deadline",
                        code="rate_limited",
                        retry_after_s=wait_s,
                    )
                slept += wait_s
                lost = 0
                await self._sleep(wait_s)
            elif await self._update(endpoint, plan):
                return slept
            else:
                lost += 1
        raise TransientError(
            f"rate limit of endpoint {endpoint!r}: others took first {lost} times in a row",
            code="rate_limited",
            retry_after_s=RACE_RETRY_S,
        )

    async def _read(self, endpoint: str) -> dict[str, int]:
        self.calls["get_item"] += 1
        resp = await self._ddb.get_item(TableName=self._table, Key=bucket_key(endpoint), ConsistentRead=True)
        return _state(resp.get("Item"))

    async def _create(self, endpoint: str, attributes: Sequence[str]) -> None:
        """Add the missing limits to the bucket, empty as of now; a racing creator wins."""
        names = {f"#a{i}": a for i, a in enumerate(attributes)}
        now = self._now_us()
        try:
            self.calls["update_item"] += 1
            resp = await self._ddb.update_item(
                TableName=self._table,
                Key=bucket_key(endpoint),
                UpdateExpression="SET " + ", ".join(f"{n} = :now" for n in names),
                ConditionExpression=" AND ".join(f"attribute_not_exists({n})" for n in names),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_ddb({":now": now}),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            self._known[endpoint] = _state(resp.get("Attributes"))
        except ClientError as e:
            await self._learn_from_failure(endpoint, e)

    async def _update(self, endpoint: str, plan: TakePlan) -> bool:
        """One conditional take; False (with the bucket's state learnt) if it lost a race."""
        names: dict[str, str] = {}
        values: dict[str, int] = {}
        sets: list[str] = []
        conditions: list[str] = []
        for i, step in enumerate(plan.steps):
            a, floor, ceil, add = f"#a{i}", f":floor{i}", f":ceil{i}", f":add{i}"
            names[a] = step.attribute
            values[floor] = step.floor_us
            if step.full:
                values[add] = step.new_us
                sets.append(f"{a} = {add}")
                conditions.append(f"{a} < {floor}")
            else:
                values[add], values[ceil] = step.add_us, step.ceil_us
                sets.append(f"{a} = {a} + {add}")
                conditions.append(f"{a} BETWEEN {floor} AND {ceil}")
        try:
            self.calls["update_item"] += 1
            resp = await self._ddb.update_item(
                TableName=self._table,
                Key=bucket_key(endpoint),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_ddb(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as e:
            await self._learn_from_failure(endpoint, e)
            return False
        new = _state(resp.get("Attributes"))
        self._known[endpoint] = new or apply_steps(self._known[endpoint], plan.steps)
        return True

    async def _learn_from_failure(self, endpoint: str, e: ClientError) -> None:
        code = e.response.get("Error", {}).get("Code", "")
        if code != "ConditionalCheckFailedException":
            raise TransientError(f"rate-limit bucket: DynamoDB said {code}", code="rate_bucket") from e
        item: Any = e.response.get("Item")  # with ReturnValuesOnConditionCheckFailure
        self._known[endpoint] = _state(item) if isinstance(item, dict) else await self._read(endpoint)


def _state(item: dict[str, Any] | None) -> dict[str, int]:
    """The bucket's times, from a DynamoDB item (attribute -> microseconds)."""
    if not item:
        return {}
    plain = from_ddb(item)
    return {k: int(v) for k, v in plain.items() if k in BUCKET_ATTRS}
