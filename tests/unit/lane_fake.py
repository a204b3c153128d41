"""An in-memory native batch API that keeps the :class:`NativeBatchApi` contract as the real
ones do: a minimum and maximum of records per job, a quota on jobs running at once (refused
with NativeQuotaExceededError), jobs that go pending -> running -> ended only as the test
advances them, per-record failures, a whole-job failure, and cancel (stopped, keeping the
outcomes of records finished before it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from shared.errors import PermanentError
from shared.lanes.native import (
    NativeLimits,
    NativeOutcome,
    NativePart,
    NativeProgress,
    NativeQuotaExceededError,
    NativeRecord,
    NativeState,
)
from shared.results import Usage


@dataclass
class FakeJob:
    part: NativePart
    records: list[NativeRecord]
    state: NativeState = NativeState.PENDING
    done: int = 0
    message: str = ""


@dataclass
class FakeBatchApi:
    limits: NativeLimits
    #: custom_id -> (code, message): records the native job fails.
    fail: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The message every job fails with when it ends (a whole-job failure), or "".
    job_failure: str = ""
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)
    #: Extra starts refused as over quota, whatever is running (the account's other users).
    refuse_next: int = 0

    async def start(self, part: NativePart, records: Sequence[NativeRecord]) -> str:
        if not self.limits.min_records <= len(records) <= self.limits.max_records:
            raise PermanentError(f"{len(records)} records is outside the job limits", code="validation")
        running = sum(j.state in (NativeState.PENDING, NativeState.RUNNING) for j in self.jobs.values())
        cap = self.limits.max_concurrent_jobs
        if self.refuse_next or (cap is not None and running >= cap):
            self.refuse_next = max(0, self.refuse_next - 1)
            raise NativeQuotaExceededError("too many jobs in progress", code="quota")
        native_id = f"fake-{len(self.jobs)}"
        self.jobs[native_id] = FakeJob(part, list(records))
        return native_id

    def advance(self, native_id: str, records: int | None = None) -> None:
        """Pending -> running; running: ``records`` more done (all by default), ended when all are."""
        job = self.jobs[native_id]
        if job.state is NativeState.PENDING:
            job.state = NativeState.RUNNING
            if records is None:
                return
        if job.state is not NativeState.RUNNING:
            return
        job.done = min(len(job.records), job.done + (len(job.records) if records is None else records))
        if job.done == len(job.records):
            job.state = NativeState.FAILED if self.job_failure else NativeState.ENDED
            job.message = self.job_failure

    def advance_all(self) -> None:
        for native_id in list(self.jobs):
            self.advance(native_id)
            self.advance(native_id)

    async def progress(self, native_id: str) -> NativeProgress:
        job = self.jobs[native_id]
        finished = job.records[: job.done]
        failed = sum(r.custom_id in self.fail for r in finished)
        return NativeProgress(job.state, len(job.records), len(finished) - failed, failed, job.message)

    async def outcomes(self, native_id: str, records: Sequence[NativeRecord]) -> AsyncIterator[NativeOutcome]:
        job = self.jobs[native_id]
        if job.state not in (NativeState.ENDED, NativeState.STOPPED):
            raise PermanentError(f"job {native_id} is {job.state}: no outputs yet", code="validation")
        finished = {r.custom_id for r in job.records[: job.done]}
        for r in reversed(records):  # the API's own order, not the input's
            if r.custom_id not in finished:
                yield NativeOutcome(r.line, r.custom_id, error_code="native_missing", error_message="no output")
            elif r.custom_id in self.fail:
                code, message = self.fail[r.custom_id]
                yield NativeOutcome(r.line, r.custom_id, status_code=400, error_code=code, error_message=message)
            else:
                body = {
                    "id": f"cmpl-{r.custom_id}",
                    "choices": [{"message": {"content": f"answer {r.line}"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5},
                }
                yield NativeOutcome(r.line, r.custom_id, body=body, status_code=200, usage=Usage(3, 5))

    async def cancel(self, native_id: str) -> None:
        self.cancels.append(native_id)
        job = self.jobs[native_id]
        if job.state in (NativeState.PENDING, NativeState.RUNNING):
            job.state = NativeState.STOPPED
