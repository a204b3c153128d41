"""The job-finished event: exactly one EventBridge event per job that finishes (completed,
or cancelled), whoever notices it (issue 14).

Whoever may have finished a job checks it: a worker invocation for each job whose results
it wrote (or found written), the DeadLetter function for the jobs it recorded failures of,
the client after ``cancel``. A check reads the job's counts the one consistent way
(:meth:`shared.store.jobs_table.JobsTable.get_job_state`: meta by key, counter shards by
prefix for their counts, both strongly consistent), and if the job is finished, *claims* its event with one
conditional UpdateItem on the job's meta item; only the winner publishes.

Why that is exactly one when the last two requests finish in two invocations at once: each
checks only after its own result transaction committed, so the later of the two reads sees
both results; both may see the job finished, and the condition lets one claim through.

The claim goes ``pending`` (with a token and the time) → PutEvents → ``sent``. A publish
that fails after the claim releases it (only if still this claim's), so the next check
publishes; the worker (or the DeadLetter function) then hands one of the job's records
back to SQS, whose redelivery (a duplicate, skipped without a model call) is that next
check. A claim left ``pending`` by a checker that died is taken over after
:data:`CLAIM_STALE_S` by the job's next check. Two gaps remain: a checker that published
and died before marking ``sent`` leaves a claim that a later check may publish again
(twice, never none); and a checker that died between its claim and its publication leaves
the event to a later check, which comes only if one of the job's records is delivered again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from botocore.exceptions import ClientError

from shared.errors import JobNotFoundError, TransientError
from shared.jobs import JobStatus
from shared.store.item_size import to_ddb
from shared.store.result_store import ResultStore

log = logging.getLogger("llmbatch.finish")

EVENT_SOURCE = "llmbatch"
EVENT_DETAIL_TYPE = "Job Finished"
#: A ``pending`` claim older than this was left by a checker that died: take it over.
CLAIM_STALE_S = 120.0
#: PutEvents tries per publication, and the pause before the second (doubled after).
PUBLISH_ATTEMPTS = 3
PUBLISH_BACKOFF_S = 0.2

PENDING = "pending"
SENT = "sent"


class FinishOutcome(StrEnum):
    #: Not finished yet (or no such job): nothing to do.
    NOT_FINISHED = "not_finished"
    #: This check published the event.
    PUBLISHED = "published"
    #: Another check has it (sent, or claimed and under way).
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    #: Claimed, but PutEvents failed: the claim was released for the next check.
    FAILED = "failed"


class EventPublisher(Protocol):
    async def publish(self, detail: dict[str, Any]) -> None:
        """Put one Job Finished event with this detail on the stack's bus; raise if not put."""


class EventBridgePublisher:
    """PutEvents to the stack's bus through an aiobotocore ``events`` client."""

    def __init__(self, events: Any, bus_name: str) -> None:
        self.events = events
        self.bus_name = bus_name

    async def publish(self, detail: dict[str, Any]) -> None:
        resp = await self.events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": EVENT_DETAIL_TYPE,
                    "Detail": json.dumps(detail),
                    "EventBusName": self.bus_name,
                }
            ]
        )
        if resp.get("FailedEntryCount"):
            entry = (resp.get("Entries") or [{}])[0]
            raise TransientError(f"PutEvents refused the event: {entry.get('ErrorCode')}", code="put_events")


def finished_detail(status: JobStatus, now: datetime | None = None) -> dict[str, Any]:
    """The event's ``detail``: the job's outcome. ``notify_url`` only when the job has one
    (the webhook rule matches on its presence). No cost estimate: its AWS part needs the
    worker's configuration and price list (llmbatch/client/cost.py, operator side)."""
    now = now or datetime.now(UTC)
    duration_s: float | None = None
    try:
        created = datetime.fromisoformat(status.meta.created_at)
        duration_s = round((now - (created if created.tzinfo else created.replace(tzinfo=UTC))).total_seconds(), 3)
    except ValueError:
        pass
    detail: dict[str, Any] = {
        "job_id": status.job_id,
        "name": status.meta.name,
        "status": status.state.value,
        "endpoint": status.meta.endpoint,
        "total": status.total,
        "succeeded": status.counts.succeeded,
        "failed": status.counts.failed,
        "cancelled": status.counts.cancelled,
        "prompt_tokens": status.counts.prompt_tokens,
        "completion_tokens": status.counts.completion_tokens,
        "created_at": status.meta.created_at,
        "finished_at": now.isoformat(timespec="seconds"),
        "duration_s": duration_s,
    }
    if status.meta.notify_url:
        detail["notify_url"] = status.meta.notify_url
    return detail


class JobFinisher:
    """Checks jobs that may have finished and publishes each one's event exactly once."""

    def __init__(
        self,
        store: ResultStore,
        publisher: EventPublisher,
        *,
        clock: Callable[[], float] = time.time,
        stale_s: float = CLAIM_STALE_S,
        backoff_s: float = PUBLISH_BACKOFF_S,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self._clock = clock
        self._stale_s = stale_s
        self._backoff_s = backoff_s

    async def check(self, job_ids: Iterable[str]) -> dict[str, FinishOutcome]:
        """Check each job (concurrently); a job whose check raised counts as FAILED."""
        ids = sorted(set(job_ids))
        outcomes = await asyncio.gather(*(self.check_one(j) for j in ids), return_exceptions=True)
        result: dict[str, FinishOutcome] = {}
        for job_id, outcome in zip(ids, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                log.warning("could not check whether the job finished", extra={"job_id": job_id}, exc_info=outcome)
                outcome = FinishOutcome.FAILED
            result[job_id] = outcome
        return result

    async def check_one(self, job_id: str) -> FinishOutcome:
        try:
            # Record and counts, no histograms: all the check and the event need.
            status = await self.store.get_job_state(job_id)
        except JobNotFoundError:
            return FinishOutcome.NOT_FINISHED
        if not status.finished:
            return FinishOutcome.NOT_FINISHED
        if status.meta.finished_event == SENT:
            return FinishOutcome.CLAIMED_ELSEWHERE
        token = uuid.uuid4().hex
        if not await self._claim(job_id, token):
            return FinishOutcome.CLAIMED_ELSEWHERE
        try:
            await self._publish(finished_detail(status))
        except Exception:
            log.warning("could not publish the job's finished event", extra={"job_id": job_id}, exc_info=True)
            await self._release(job_id, token)
            return FinishOutcome.FAILED
        await self._settle(job_id, token)
        log.info("job finished", extra={"job_id": job_id, "status": status.state.value})
        return FinishOutcome.PUBLISHED

    async def _publish(self, detail: dict[str, Any]) -> None:
        delay = self._backoff_s
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self.publisher.publish(detail)
                return
            except Exception:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                await asyncio.sleep(delay)
                delay *= 2

    def _key(self, job_id: str) -> dict[str, Any]:
        return to_ddb({"job_id": job_id, "item": "meta"})

    async def _claim(self, job_id: str, token: str) -> bool:
        """SET the claim if nobody holds one: none yet (or the empty default a job record is
        created with), or a ``pending`` one older than the stale limit."""
        now = self._clock()
        try:
            await self.store.call(
                "update_item",
                TableName=self.store.jobs_table,
                Key=self._key(job_id),
                UpdateExpression="SET finished_event = :p, finished_claim = :t, finished_claimed_at = :now",
                ConditionExpression=(
                    "attribute_exists(job_id) AND (attribute_not_exists(finished_event) OR finished_event = :e"
                    " OR (finished_event = :p AND finished_claimed_at < :stale))"
                ),
                ExpressionAttributeValues=to_ddb(
                    {":p": PENDING, ":t": token, ":now": int(now), ":e": "", ":stale": int(now - self._stale_s)}
                ),
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def _settle(self, job_id: str, token: str) -> None:
        await self._if_mine(job_id, token, "SET finished_event = :s REMOVE finished_claim", {":s": SENT})

    async def _release(self, job_id: str, token: str) -> None:
        try:
            await self._if_mine(job_id, token, "REMOVE finished_event, finished_claim, finished_claimed_at", {})
        except Exception:  # the claim goes stale and is taken over instead
            log.warning("could not release the finished-event claim", extra={"job_id": job_id}, exc_info=True)

    async def _if_mine(self, job_id: str, token: str, update: str, values: dict[str, Any]) -> None:
        try:
            await self.store.call(
                "update_item",
                TableName=self.store.jobs_table,
                Key=self._key(job_id),
                UpdateExpression=update,
                ConditionExpression="finished_claim = :t",
                ExpressionAttributeValues=to_ddb({":t": token, **values}),
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            log.warning("the finished-event claim was taken over", extra={"job_id": job_id})
