"""The one object the worker, the DeadLetter function and the client use for DynamoDB: the
jobs table (:mod:`shared.store.jobs_table`) and the results table
(:mod:`shared.store.results_table`) over one counted client (:mod:`shared.store.dynamo`).

See the README's "Storage" section for the tables' items and keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from shared.jobs import JobMeta, JobStatus, Metering
from shared.payloads import PayloadStore
from shared.results import RequestResult
from shared.store.dynamo import DynamoClient
from shared.store.jobs_table import JobsTable
from shared.store.results_table import ResultsTable
from shared.store.retry import Backoff
from shared.store.terminal_writes import WriteOutcome


class ResultStore:
    """Reads and writes jobs and results through an aiobotocore DynamoDB client: each call
    handed to the table it concerns (:attr:`jobs`, :attr:`results`)."""

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
        self.dynamo = DynamoClient(ddb, max_attempts=max_attempts)
        self.jobs = JobsTable(self.dynamo, jobs_table, counter_shards=counter_shards)
        self.results = ResultsTable(self.dynamo, results_table, self.jobs, payloads=payloads)

    @property
    def jobs_table(self) -> str:
        return self.jobs.name

    @property
    def results_table(self) -> str:
        return self.results.name

    @property
    def payloads(self) -> PayloadStore | None:
        return self.results.payloads

    @property
    def calls(self) -> Counter[str]:
        """Calls made, by operation: the benchmark reports AWS calls per request."""
        return self.dynamo.calls

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One DynamoDB call, counted."""
        return await self.dynamo.call(op, **kwargs)

    def backoff(self, give_up_at: float | None = None) -> Backoff:
        """Backoff for one operation: the store's ``max_attempts``, or until ``give_up_at``."""
        return self.dynamo.backoff(give_up_at)

    async def batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying UnprocessedItems with backoff."""
        await self.dynamo.batch_write(table, requests)

    # ---- the jobs table -----------------------------------------------------------------

    def counter_key(self, job_id: str) -> dict[str, Any]:
        """A random counter shard of the job."""
        return self.jobs.counter_key(job_id)

    async def create_job(self, meta: JobMeta) -> None:
        await self.jobs.create_job(meta)

    async def record_enqueued(self, job_id: str, count: int, *, sealed: bool) -> None:
        await self.jobs.record_enqueued(job_id, count, sealed=sealed)

    async def request_cancel(self, job_id: str) -> None:
        """Flag the job: workers record its remaining requests as cancelled, uncalled."""
        await self.jobs.request_cancel(job_id)

    async def get_job(self, job_id: str) -> JobStatus:
        """The job's record and its summed counters, read consistently."""
        return await self.jobs.get_job(job_id)

    async def get_job_state(self, job_id: str) -> JobStatus:
        """The job's record and counts only (:meth:`JobsTable.get_job_state`): enough for its state."""
        return await self.jobs.get_job_state(job_id)

    async def list_jobs(self, limit: int = 100) -> list[JobStatus]:
        """The newest ``limit`` jobs, newest first."""
        return await self.jobs.list_jobs(limit)

    async def known_jobs(self, job_ids: Iterable[str]) -> dict[str, JobMeta]:
        return await self.jobs.known_jobs(job_ids)

    async def add_metering(self, usage: Mapping[str, Metering]) -> None:
        """Add one invocation's use of the stack to each job's counters (a random shard)."""
        await self.jobs.add_metering(usage)

    async def note_retries(self, notes: Sequence[dict[str, Any]]) -> None:
        """Remember the last transient error of requests that go back to the queue."""
        await self.jobs.note_retries(notes)

    async def items_with_prefix(
        self,
        prefix: str,
        job_id: str | None = None,
        *,
        consistent: bool = False,
        attributes: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs-table items whose ``item`` starts with ``prefix``, of one job or of every job."""
        return await self.jobs.items_with_prefix(prefix, job_id, consistent=consistent, attributes=attributes)

    async def retry_note(self, job_id: str, custom_id: str) -> dict[str, Any] | None:
        return await self.jobs.retry_note(job_id, custom_id)

    async def forget_dead_letter(self, job_id: str, key: str) -> None:
        await self.jobs.forget_dead_letter(job_id, key)

    # ---- the results table --------------------------------------------------------------

    async def stored_results(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (job_id, custom_id) pairs already have a terminal result (a consistent read)."""
        return await self.results.stored_results(keys)

    async def write_terminal(
        self, job_id: str, results: Sequence[RequestResult], *, give_up_at: float | None = None
    ) -> WriteOutcome:
        """Store first terminal results of one job (at most 99) and move its counters
        (:meth:`ResultsTable.write_terminal`)."""
        return await self.results.write_terminal(job_id, results, give_up_at=give_up_at)

    async def reopen(self, job_id: str, custom_id: str) -> bool:
        """Take back a failure so the request can run again (:meth:`ResultsTable.reopen`)."""
        return await self.results.reopen(job_id, custom_id)

    def iter_results(self, job_id: str) -> AsyncIterator[RequestResult]:
        return self.results.iter_results(job_id)
