"""The lane poller: each scheduled run moves every batch-lane job one step further.

Per active job (the ``lane#active`` list, :mod:`shared.lanes.parts`), per part:

- ``staged``: started while the endpoint's quota on running native jobs allows (a
  ``starting`` lease first, so overlapping runs never both create one), or, on a
  cancelled job, marked to import as cancelled;
- ``running``: its progress read into the part (and the job's meta item, for ``status``);
  on a cancelled job the native job is stopped; once it has ended, it is marked to import;
- ``importing``: its outcomes written into the results table through the same
  exactly-once writes as online results (:meth:`ResultStore.write_terminal`), in input
  order, in chunks; a conditional ``cursor`` on the part says how far, so a part too big
  for one run continues where the last one stopped;
- ``done``: nothing; a job whose parts are all done leaves the active list (and gets its
  job-finished event).

Every await is bounded by the run's :class:`shared.budget.Deadline`; a run that runs out
of time stops where it is, and the next run continues (every step is conditional, so
repeating one is harmless).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from shared.budget import Deadline
from shared.endpoints.specs import EndpointSpec
from shared.errors import PermanentError, TransientError
from shared.finish import JobFinisher
from shared.jobs import JobMeta
from shared.lanes.native import (
    TERMINAL_STATES,
    NativeBatchApi,
    NativeOutcome,
    NativeQuotaExceededError,
    NativeRecord,
    NativeState,
)
from shared.lanes.parts import Ending, LaneTable, PartItem, PartState, decode_records
from shared.messages import MESSAGE_VERSION, RequestMessage, sign
from shared.payloads import PayloadStore
from shared.results import RequestResult, RequestStatus
from shared.store.result_store import ResultStore
from shared.store.terminal_writes import RESULTS_MAX_PER_WRITE

log = logging.getLogger("llmbatch.lanes")

T = TypeVar("T")

#: A ``starting`` lease older than this is taken back (the run that took it died).
START_LEASE_S = 300.0
#: How long past the deadline noting a written chunk in the part's cursor may take (within
#: the function's reserve, shared/lanes/runtime.py).
CURSOR_GRACE_S = 2.0
#: What a record of a stopped native job that did not finish ends as.
CANCELLED_ERROR = ("cancelled", "job cancelled")
MISSING_CODE = "native_missing"
_ENDINGS = {NativeState.ENDED: Ending.ENDED, NativeState.FAILED: Ending.FAILED, NativeState.STOPPED: Ending.STOPPED}

ApiFor = Callable[[str, EndpointSpec], Awaitable[NativeBatchApi | None]]


class OutOfTimeError(Exception):
    """The run's deadline came: stop here, the next run continues."""


@dataclass
class PollReport:
    jobs: int = 0
    started: int = 0
    imported: int = 0
    finished_jobs: list[str] = field(default_factory=list)
    #: Parts by state after the run.
    states: Counter[str] = field(default_factory=Counter)
    out_of_time: bool = False
    errors: list[str] = field(default_factory=list)


class LanePoller:
    def __init__(
        self,
        store: ResultStore,
        lanes: LaneTable,
        payloads: PayloadStore,
        endpoints: Mapping[str, EndpointSpec],
        api_for: ApiFor,
        *,
        finisher: JobFinisher | None = None,
        chunk: int = RESULTS_MAX_PER_WRITE,
        start_lease_s: float = START_LEASE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.payloads = payloads
        self.endpoints = endpoints
        self._api_for = api_for
        self.finisher = finisher
        self.chunk = max(1, min(chunk, RESULTS_MAX_PER_WRITE))
        self.start_lease_s = start_lease_s
        self._clock = clock

    # ---- one run ------------------------------------------------------------------------

    async def run(self, deadline: Deadline) -> PollReport:
        report = PollReport()
        self._deadline = deadline
        self._records: dict[str, list[NativeRecord]] = {}
        try:
            job_ids = await self._bounded(self.lanes.active_jobs())
            report.jobs = len(job_ids)
            jobs = {j: await self._bounded(self.lanes.parts(j)) for j in job_ids}
            # Native jobs running now, per endpoint: the quota is the endpoint's, over all jobs.
            running: Counter[str] = Counter(
                p.endpoint
                for parts in jobs.values()
                for p in parts
                if p.state in (PartState.STARTING, PartState.RUNNING)
            )
            full: set[str] = set()
            for job_id, parts in jobs.items():
                try:
                    await self._job(job_id, parts, running, full, report)
                except (TransientError, PermanentError) as e:  # one job's trouble is not the others'
                    log.warning("lane job %s: %s", job_id, e, extra={"job_id": job_id})
                    report.errors.append(f"{job_id}: {e}")
        except OutOfTimeError:
            report.out_of_time = True
            log.info("lane poller: out of time, the next run continues")
        return report

    async def _job(
        self, job_id: str, parts: list[PartItem], running: Counter[str], full: set[str], report: PollReport
    ) -> None:
        meta = (await self._bounded(self.store.get_job_state(job_id))).meta
        now = []
        for part in parts:
            part = await self._step(meta, part, running, full, report)
            report.states[part.state] += 1
            now.append(part)
        parts = now
        await self._bounded(self.lanes.set_job_progress(job_id, progress_figures(parts)))
        if all(p.state == PartState.DONE for p in parts):
            await self._bounded(self.lanes.retire(job_id))
            report.finished_jobs.append(job_id)
            if self.finisher is not None:
                await self._bounded(self.finisher.check([job_id]))

    async def _step(
        self, meta: JobMeta, part: PartItem, running: Counter[str], full: set[str], report: PollReport
    ) -> PartItem:
        """Move one part as far as this run can; returns it as it now stands."""
        spec = self.endpoints.get(part.endpoint)
        api = await self._bounded(self._api_for(part.endpoint, spec)) if spec is not None else None
        if part.state == PartState.STARTING and self._clock() - part.claimed_at > self.start_lease_s:
            part = await self._move(part, PartState.STAGED, claimed_at=0.0) or part
        if part.state == PartState.STAGED:
            if meta.cancel_requested:
                part = await self._move(part, PartState.IMPORTING, ending=Ending.CANCELLED.value) or part
            elif api is None:
                why = f"endpoint {part.endpoint!r} has no native batch API in this stack's settings"
                part = await self._move(part, PartState.IMPORTING, ending=Ending.FAILED.value, message=why) or part
            elif part.endpoint not in full and _has_room(api, running[part.endpoint]):
                part = await self._start(part, api, running, full, report)
        if part.state == PartState.RUNNING:
            if api is None:
                why = f"endpoint {part.endpoint!r} has no native batch API in this stack's settings any more"
                part = await self._move(part, PartState.IMPORTING, ending=Ending.FAILED.value, message=why) or part
            else:
                part = await self._follow(meta, part, api)
            if part.state != PartState.RUNNING:  # its room in the quota is free again
                running[part.endpoint] -= 1
        if part.state == PartState.IMPORTING:
            part = await self._import(meta, part, api, report)
        return part

    # ---- the steps ------------------------------------------------------------------------

    async def _start(
        self, part: PartItem, api: NativeBatchApi, running: Counter[str], full: set[str], report: PollReport
    ) -> PartItem:
        claimed = await self._move(part, PartState.STARTING, claimed_at=self._clock())
        if claimed is None:
            return part
        running[part.endpoint] += 1
        try:
            native_id = await self._bounded(api.start(part.native_part, await self._part_records(part)))
        except NativeQuotaExceededError as e:
            log.info("part %s/%d waits: %s", part.job_id, part.part, e)
            full.add(part.endpoint)
            running[part.endpoint] -= 1
            return await self._move(claimed, PartState.STAGED, claimed_at=0.0) or claimed
        except PermanentError as e:
            running[part.endpoint] -= 1
            failed = await self._move(claimed, PartState.IMPORTING, ending=Ending.FAILED.value, message=e.message)
            return failed or claimed
        except (TransientError, OutOfTimeError):
            # Try again next run (the native job may exist: the lease lapses, and it is
            # then started again; outcomes are written once whatever runs them).
            running[part.endpoint] -= 1
            await self._bounded_or_none(self._move(claimed, PartState.STAGED, claimed_at=0.0))
            raise
        report.started += 1
        return await self._move(claimed, PartState.RUNNING, native_id=native_id) or claimed

    async def _follow(self, meta: JobMeta, part: PartItem, api: NativeBatchApi) -> PartItem:
        if meta.cancel_requested and not part.cancel_sent:
            await self._bounded(api.cancel(part.native_id))
            part = await self._set(part, cancel_sent=True)
        progress = await self._bounded(api.progress(part.native_id))
        if progress.state in TERMINAL_STATES:
            ending = _ENDINGS[progress.state]
            moved = await self._move(
                part,
                PartState.IMPORTING,
                ending=ending.value,
                message=progress.message,
                completed=progress.completed,
                failed=progress.failed,
            )
            return moved or part
        if (progress.completed, progress.failed) != (part.completed, part.failed):
            part = await self._set(part, completed=progress.completed, failed=progress.failed)
        return part

    async def _import(self, meta: JobMeta, part: PartItem, api: NativeBatchApi | None, report: PollReport) -> PartItem:
        records = await self._part_records(part)
        outcomes = await self._outcomes(part, api, records)
        by_line = {r.line: r for r in records}
        while part.cursor < len(outcomes):
            chunk = outcomes[part.cursor : part.cursor + self.chunk]
            results = [self._result(meta, part, by_line[o.line], o) for o in chunk]
            outcome = await self._bounded(
                self.store.write_terminal(part.job_id, results, give_up_at=self._give_up_at())
            )
            report.imported += len(outcome.written)
            # Within the reserve past the deadline: written results not noted would be written
            # again (harmlessly: they count once) by the next run.
            advanced = await self._move(
                part, PartState.IMPORTING, grace_s=CURSOR_GRACE_S, cursor=part.cursor + len(chunk)
            )
            if advanced is None:  # another run moved it: leave the rest to it
                return part
            part = advanced
        counts = Counter(o.succeeded for o in outcomes)
        done = await self._move(part, PartState.DONE, completed=counts[True], failed=counts[False])
        return done or part

    async def _outcomes(
        self, part: PartItem, api: NativeBatchApi | None, records: Sequence[NativeRecord]
    ) -> list[NativeOutcome]:
        """Every record's outcome, in input order (the cursor counts in this order)."""
        ending = Ending(part.ending)
        if ending in (Ending.ENDED, Ending.STOPPED) and api is not None:

            async def collect() -> list[NativeOutcome]:
                return [o async for o in api.outcomes(part.native_id, records)]

            found = {o.line: o for o in await self._bounded(collect())}
            return [found.get(r.line) or _missing(r, part) for r in records]
        if ending is Ending.CANCELLED:
            return [
                NativeOutcome(r.line, r.custom_id, error_code=CANCELLED_ERROR[0], error_message=CANCELLED_ERROR[1])
                for r in records
            ]
        message = part.message or "the native batch job failed"
        return [NativeOutcome(r.line, r.custom_id, error_code="native_failed", error_message=message) for r in records]

    def _result(self, meta: JobMeta, part: PartItem, record: NativeRecord, o: NativeOutcome) -> RequestResult:
        if o.succeeded:
            status = RequestStatus.SUCCEEDED
        elif o.error_code == CANCELLED_ERROR[0] or (part.ending == Ending.STOPPED and o.error_code == MISSING_CODE):
            status = RequestStatus.CANCELLED
        else:
            status = RequestStatus.FAILED
        request_id = o.body.get("id") if o.body and isinstance(o.body.get("id"), str) else None
        return RequestResult(
            job_id=part.job_id,
            custom_id=o.custom_id,
            line=o.line,
            status=status,
            attempt=1,
            endpoint=part.endpoint,
            status_code=o.status_code,
            request_id=request_id,
            response_body=o.body if status is RequestStatus.SUCCEEDED else None,
            error_code=None
            if status is RequestStatus.SUCCEEDED
            else (CANCELLED_ERROR[0] if status is RequestStatus.CANCELLED else o.error_code),
            error_message=None
            if status is RequestStatus.SUCCEEDED
            else (CANCELLED_ERROR[1] if status is RequestStatus.CANCELLED else o.error_message),
            usage=o.usage,
            # What `llmbatch retry` sends again, online: the request as submit would have sent it.
            request_message=request_message(meta, part, record) if status is RequestStatus.FAILED else None,
        )

    # ---- helpers ----------------------------------------------------------------------------

    async def _part_records(self, part: PartItem) -> list[NativeRecord]:
        if part.input_key not in self._records:
            data = await self._bounded(self.payloads.get(part.input_key))
            self._records[part.input_key] = decode_records(data)
        return self._records[part.input_key]

    async def _move(self, part: PartItem, to: PartState, *, grace_s: float = 0.0, **changes: Any) -> PartItem | None:
        """The part in state ``to`` with ``changes``, if it still was as this run read it
        (its state and cursor); None when another run moved it first."""
        values = {"state": to.value, **changes}
        ok = await self._bounded(
            self.lanes.update(part, expect={"state": part.state, "cursor": part.cursor}, changes=values), grace_s
        )
        return _replace(part, values) if ok else None

    async def _set(self, part: PartItem, **changes: Any) -> PartItem:
        moved = await self._move(part, PartState(part.state), **changes)
        return moved or part

    async def _bounded(self, aw: Awaitable[T], grace_s: float = 0.0) -> T:
        left = self._deadline.remaining() + grace_s
        if left <= 0:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise OutOfTimeError
        try:
            return await asyncio.wait_for(aw, left)
        except TimeoutError as e:
            raise OutOfTimeError from e

    async def _bounded_or_none(self, aw: Awaitable[T]) -> T | None:
        try:
            return await self._bounded(aw)
        except (OutOfTimeError, TransientError):
            return None

    def _give_up_at(self) -> float:
        return time.monotonic() + self._deadline.remaining()


def _has_room(api: NativeBatchApi, running: int) -> bool:
    cap = api.limits.max_concurrent_jobs
    return cap is None or running < cap


def _missing(r: NativeRecord, part: PartItem) -> NativeOutcome:
    return NativeOutcome(
        r.line, r.custom_id, error_code=MISSING_CODE, error_message=f"native job {part.native_id} reported nothing"
    )


def _replace(part: PartItem, values: Mapping[str, Any]) -> PartItem:
    return replace(part, **values)


def request_message(meta: JobMeta, part: PartItem, record: NativeRecord) -> str:
    """The record as the SQS message ``submit`` sends on the online lane, signed with the
    job's key: ``retry`` re-sends it as it is."""
    fields: dict[str, Any] = {
        "v": MESSAGE_VERSION,
        "job_id": part.job_id,
        "custom_id": record.custom_id,
        "line": record.line,
        "url": record.url,
        "body": record.body,
        "endpoint": part.endpoint,
    }
    if meta.sign_key:
        fields["sig"] = sign(meta.sign_key, part.job_id, record.custom_id, record.line)
    return RequestMessage.model_validate(fields).encode()


def progress_figures(parts: Sequence[PartItem]) -> dict[str, int]:
    """The job's native progress, summed over its parts, as its meta item keeps it."""
    states = Counter(p.state for p in parts)
    return {
        "native_parts": len(parts),
        "native_parts_running": states[PartState.RUNNING] + states[PartState.STARTING],
        "native_parts_done": states[PartState.DONE],
        "native_completed": sum(p.completed for p in parts),
        "native_failed": sum(p.failed for p in parts),
    }
