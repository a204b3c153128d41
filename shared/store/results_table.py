"""The results table: one item per request in a terminal state, key ``job_id`` + ``custom_id``.

A terminal result and its counter increment (on the jobs table, :mod:`shared.store.jobs_table`)
are written in one transaction whose puts are conditional on the result not existing yet: a
duplicate delivery can neither overwrite an answer nor count twice
(:mod:`shared.store.terminal_writes`). Taking a failure back for a retry deletes its result and
its count in one transaction likewise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from shared.payloads import PayloadStore
from shared.results import RequestResult
from shared.store.dynamo import DynamoClient
from shared.store.item_size import from_ddb, to_ddb
from shared.store.jobs_table import JobsTable
from shared.store.retry import CONDITION_FAILED, error_parts, is_retryable
from shared.store.terminal_writes import TerminalWrite, WriteOutcome


class ResultsTable:
    """Reads and writes the results table (and, with each result, its job's counters)."""

    def __init__(
        self, dynamo: DynamoClient, name: str, jobs: JobsTable, *, payloads: PayloadStore | None = None
    ) -> None:
        self.dynamo = dynamo
        self.name = name
        #: Where each result's count goes, in the same transaction.
        self.jobs = jobs
        #: The payload bucket, for what does not fit an item (without it, the item goes without:
        #: :mod:`shared.store.result_fit`).
        self.payloads = payloads

    async def stored_results(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (job_id, custom_id) pairs already have a terminal result (a consistent read:
        it gates model calls and redrive)."""
        wanted = [{"job_id": j, "custom_id": c} for j, c in set(keys)]
        found = await self.dynamo.batch_get(self.name, wanted, projection="job_id, custom_id")
        return {(i["job_id"], i["custom_id"]) for i in found}

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

    async def reopen(self, job_id: str, custom_id: str) -> bool:
        """Take back a failure so the request can run again: delete its result and its
        count in one transaction. False only if there was no failure to reopen (the
        condition failed); a conflicting or throttled transaction is tried again, and
        ``TransientError`` raised if it keeps failing so."""
        backoff = self.dynamo.backoff()
        while True:
            try:
                await self.dynamo.call(
                    "transact_write_items",
                    TransactItems=[
                        {
                            "Delete": {
                                "TableName": self.name,
                                "Key": to_ddb({"job_id": job_id, "custom_id": custom_id}),
                                "ConditionExpression": "#s = :f",
                                "ExpressionAttributeNames": {"#s": "status"},
                                "ExpressionAttributeValues": to_ddb({":f": "failed"}),
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.jobs.name,
                                "Key": self.jobs.counter_key(job_id),
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

    async def iter_results(self, job_id: str) -> AsyncIterator[RequestResult]:
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "job_id = :j",
            "ExpressionAttributeValues": to_ddb({":j": job_id}),
        }
        while True:
            resp = await self.dynamo.call("query", **kwargs)
            for item in resp.get("Items", []):
                yield RequestResult.from_item(from_ddb(item))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
