"""Processing one SQS batch: validate, skip what is done, call the model concurrently under
one deadline, store every answer, and hand the rest back to SQS.

The pieces, each in its own module: :mod:`shared.budget` (the deadline),
:mod:`shared.limiter` (calls in flight) and :mod:`shared.adaptive` (its size, when adaptive),
:mod:`shared.throttle` (the endpoint's global rate limits and Retry-After),
:mod:`shared.endpoints` (the model), :mod:`shared.result_writer` (batched, conditional writes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType

from shared.adaptive import AdaptiveConcurrency
from shared.backoff import retry_delay_s
from shared.budget import Deadline, LambdaContextLike
from shared.config import RuntimeLimits, WorkerConfig
from shared.endpoints.base import Endpoint, EndpointReply
from shared.errors import (
    BudgetExhaustedError,
    EndpointTimeoutError,
    InvalidMessageError,
    PermanentError,
    TransientError,
    UnreadableMessageError,
)
from shared.jobs import JobMeta
from shared.limiter import AdjustableLimiter
from shared.messages import RequestMessage, decode_message
from shared.packing import ListSupport, OutgoingCall, Packer
from shared.payloads import PayloadStore
from shared.request_log import RequestLog
from shared.result_writer import ResultWriter
from shared.results import RequestResult, RequestStatus, Usage, utc_now_iso
from shared.store import ResultStore
from shared.throttle import Permit, Throttle

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

log = logging.getLogger("llmbatch.worker")

#: Stop all work this long before Lambda's own timeout, whatever is still unwritten.
HARD_STOP_MARGIN_S = 0.5
#: How often a running invocation re-reads its jobs (to notice a cancel).
JOB_REFRESH_S = 2.0
#: How long a result waits for others to share its transaction. Under a rate limit answers
#: trickle in (40 a second at 2,400 RPM): a short wait would write a few per transaction, and
#: this one writes tens. Nothing waits on it but the record's own handler (its slot is free
#: already), and the last records of a batch never do (``BatchRun._flush_if_all_waiting``).
RESULT_WRITE_WAIT_S = 1.0
CANCELLED = ("cancelled", "job cancelled")


class JobCancelledError(Exception):
    """Internal: the job was cancelled while this request waited for a slot."""


class Disposition:
    """What became of a record that SQS may now delete."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


class ContainerLoopBatchProcessor(AsyncBatchProcessor):
    """Powertools' SQS batch processor, run on the container's own event loop.

    Outside Lambda, ``AsyncBatchProcessor.async_process`` falls back to ``asyncio.run``,
    which makes a new loop per invocation and breaks the connection pools made on the
    container's loop; so this processor always runs on the loop it is given. It keeps
    Powertools' record conversion, failure collection and partial batch response. Its
    gather is unbounded by design: the record handler itself waits for a slot of the
    limiter and respects the invocation's deadline (Powertools has neither:
    powertools-lambda-python#1242).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._loop = loop

    def async_process(self) -> list[tuple]:
        async def all_records() -> list[Any]:
            return list(await asyncio.gather(*(self._async_process_record(r) for r in self.records)))

        return self._loop.run_until_complete(all_records())


#: Where requests that name no endpoint this worker serves (a mistyped name, an invalid
#: message) are counted: one fixed key, so a job cannot add metric dimensions, and one no
#: endpoint can have (names start with a letter or digit, shared/endpoints/specs.py).
NO_ENDPOINT = "(none)"


@dataclass
class EndpointStats:
    """What an invocation did on one endpoint: its model calls and the requests naming it."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    duplicates: int = 0
    budget_exhausted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_ms: list[int] = field(default_factory=list)
    #: Calls held back by a rate limit (the global bucket or a Retry-After), and how long.
    rate_limited_calls: int = 0
    rate_limit_wait_s: float = 0.0
    #: 429s the endpoint answered.
    throttled: int = 0


@dataclass
class InvocationStats(EndpointStats):
    """The invocation's totals over all endpoints, each endpoint's own (``by_endpoint``), and
    what belongs to the container rather than to an endpoint."""

    #: Messages nobody can record (unreadable, or of an unknown job): the container's, not
    #: an endpoint's, as what they name cannot be trusted.
    dead_lettered: int = 0
    #: Seconds spent preparing, running the records, and writing what was left.
    phases_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Model calls allowed in flight when the invocation ended (moves when adaptive); one
    #: limiter serves every endpoint of the container.
    concurrency_limit: int = 0
    by_endpoint: dict[str, EndpointStats] = field(default_factory=dict)

    def counters(self, endpoint: str) -> tuple[EndpointStats, EndpointStats]:
        """The two places a count goes: these totals and ``endpoint``'s own."""
        return self, self.by_endpoint.setdefault(endpoint, EndpointStats())


class QueueOps:
    """The worker's own SQS calls: retry-later visibility, and dead-lettering a message
    nobody can record (its reason attached as a message attribute)."""

    def __init__(self, sqs: Any, *, request_queue_url: str, dead_letter_queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = request_queue_url
        self._dlq_url = dead_letter_queue_url
        self.calls: Counter[str] = Counter()

    async def dead_letter(self, body: str, reason: str) -> None:
        if not self._dlq_url:
            raise UnreadableMessageError(reason, code="unreadable")
        self.calls["send_message"] += 1
        await self._sqs.send_message(
            QueueUrl=self._dlq_url,
            MessageBody=body,
            MessageAttributes={"llmbatch-reason": {"DataType": "String", "StringValue": reason[:1000]}},
        )

    async def retry_later(self, delays: dict[str, int]) -> None:
        """``receipt handle -> seconds``, 10 per ChangeMessageVisibilityBatch."""
        if not self._queue_url or not delays:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": d} for i, (h, d) in enumerate(delays.items())
        ]
        for start in range(0, len(entries), 10):
            self.calls["change_message_visibility_batch"] += 1
            await self._sqs.change_message_visibility_batch(
                QueueUrl=self._queue_url, Entries=entries[start : start + 10]
            )


class Worker:
    """Container-scoped: one per Lambda container, reused by every invocation."""

    def __init__(
        self,
        config: WorkerConfig,
        store: ResultStore,
        endpoints: Mapping[str, Endpoint],
        *,
        queue: QueueOps | None = None,
        limits: Callable[[], RuntimeLimits] | None = None,
        payloads: PayloadStore | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.payloads = payloads
        self.config = config
        self.store = store
        self.endpoints = endpoints
        self.queue = queue
        self._limits = limits or (lambda: config.default_limits)
        self.limiter = AdjustableLimiter(config.default_limits.max_concurrency)
        self.concurrency = AdaptiveConcurrency(self.limiter)
        #: Without a bucket (tests that build a Worker by hand), rate limits are not enforced.
        self.throttle = throttle or Throttle(None)
        #: Which endpoints refuse packed inputs, learned once per container.
        self.list_support = ListSupport()
        self.request_log = RequestLog(payloads=config.log_payloads)
        self.last_stats = InvocationStats()

    async def start(self, records: list[dict[str, Any]], context: LambdaContextLike) -> BatchRun:
        """Everything an invocation needs before its records run: the deadline (taken
        first, so setup counts against it), live limits, and one lookup of what is done."""
        deadline = Deadline.from_context(context, reserve_s=self.config.write_reserve_s)
        hard_stop = Deadline.from_context(context, reserve_s=HARD_STOP_MARGIN_S)
        limits = self._limits()
        await self.concurrency.configure(enabled=limits.adaptive_concurrency, max_concurrency=limits.max_concurrency)
        run = BatchRun(self, deadline, hard_stop, limits=limits)
        await run.prepare(records)
        return run

    def process(
        self, event: Mapping[str, Any], context: LambdaContextLike, loop: asyncio.AbstractEventLoop
    ) -> PartialItemFailureResponse:
        records = list(event.get("Records", []))
        t0 = time.monotonic()
        run = loop.run_until_complete(self.start(records, context))
        t1 = time.monotonic()
        processor = ContainerLoopBatchProcessor(loop)
        with processor(records=records, handler=run.handle_record, lambda_context=context):  # type: ignore[arg-type]
            processor.async_process()
        t2 = time.monotonic()
        loop.run_until_complete(run.finish())
        t3 = time.monotonic()
        run.stats.phases_s = (t1 - t0, t2 - t1, t3 - t2)
        if run.deadline.expired and context.get_remaining_time_in_millis() < 1000:
            log.warning(
                "invocation ended close to its timeout",
                extra={"phases_s": [round(x, 3) for x in run.stats.phases_s], "records": len(records)},
            )
        self.last_stats = run.stats
        return processor.response()


class BatchRun:
    """The state of one invocation."""

    def __init__(
        self,
        worker: Worker,
        deadline: Deadline,
        hard_stop: Deadline | None = None,
        *,
        limits: RuntimeLimits | None = None,
    ) -> None:
        self.worker = worker
        self.deadline = deadline
        #: The last moment to still be working: writes not done by then are given up on
        #: (their records go back to SQS) rather than let Lambda kill the whole batch.
        self.hard_stop = hard_stop or deadline
        self.limits = limits or worker.config.default_limits
        self.writer = ResultWriter(worker.store, max_wait_s=RESULT_WRITE_WAIT_S)
        self.stats = InvocationStats()
        #: Records still being handled; of them, those waiting for their result's write, and
        #: those whose model call is under way (the rest may still need a rate-limit permit).
        self._open = 0
        self._writing = 0
        self._calling = 0
        self._flushes: set[asyncio.Task[None]] = set()
        #: Single-input embeddings/completions requests of one job share calls (shared/packing.py).
        self.packer = Packer(
            self._call_endpoint,
            max_inputs=self.limits.max_inputs_per_call,
            list_support=worker.list_support,
            endpoint_caps=worker.config.packing_caps(),
        )
        self._jobs: dict[str, JobMeta] = {}
        self._stored: set[tuple[str, str]] = set()
        self._retry_notes: list[dict[str, Any]] = []
        self._retry_delays: dict[str, int] = {}
        self._jobs_read_at = time.monotonic()
        self._jobs_lock = asyncio.Lock()

    async def prepare(self, records: list[dict[str, Any]]) -> None:
        """One batched read for the whole batch: the jobs named, and the requests that
        already have an answer (redelivered or enqueued twice) so they are not paid for twice."""
        self._open = len(records)
        keys: list[tuple[str, str]] = []
        for r in records:
            try:
                data = json.loads(r.get("body", ""))
            except (json.JSONDecodeError, TypeError):
                continue
            if (
                isinstance(data, dict)
                and isinstance(data.get("job_id"), str)
                and isinstance(data.get("custom_id"), str)
            ):
                keys.append((data["job_id"], data["custom_id"]))
        if not keys:
            return
        self._jobs_read_at = time.monotonic()
        jobs, stored = await asyncio.gather(
            self.worker.store.known_jobs(j for j, _ in keys), self.worker.store.stored_results(keys)
        )
        self._jobs, self._stored = jobs, stored

    async def handle_record(self, record: SQSRecord) -> str:
        try:
            return await self._handle_record(record)
        finally:
            self._open -= 1
            self._flush_if_all_waiting()

    async def _handle_record(self, record: SQSRecord) -> str:
        attempt = int(record.attributes.approximate_receive_count or 1)
        try:
            msg = decode_message(record.body)
        except InvalidMessageError as e:
            return await self._invalid(record, e, attempt)
        if msg.body_ref is not None:
            if self.worker.payloads is None:
                return await self._invalid(
                    record,
                    InvalidMessageError(
                        "body_ref needs the stack's payload bucket", job_id=msg.job_id, custom_id=msg.custom_id
                    ),
                    attempt,
                )
            body = json.loads(await self.worker.payloads.get(msg.body_ref))
            msg = msg.model_copy(update={"body": body, "body_ref": None})

        job = self._jobs.get(msg.job_id)
        if job is None:
            return await self._dead_letter(record.body, f"unknown job {msg.job_id!r}")
        if (msg.job_id, msg.custom_id) in self._stored:
            for s in self._counters(msg.endpoint):
                s.duplicates += 1
            return Disposition.DUPLICATE
        if job.cancel_requested:
            return await self._settle(msg, self._result(msg, attempt, RequestStatus.CANCELLED, error=CANCELLED))

        endpoint = self.worker.endpoints.get(msg.endpoint)
        if endpoint is None:
            return await self._settle(
                msg,
                self._result(
                    msg,
                    attempt,
                    RequestStatus.FAILED,
                    error=("unknown_endpoint", f"no endpoint named {msg.endpoint!r}"),
                ),
            )
        started = time.monotonic()
        try:
            reply = await self._call(endpoint, msg)
        except JobCancelledError:
            return await self._settle(msg, self._result(msg, attempt, RequestStatus.CANCELLED, error=CANCELLED))
        except PermanentError as e:
            latency = int((time.monotonic() - started) * 1000)
            return await self._settle(
                msg,
                self._result(
                    msg,
                    attempt,
                    RequestStatus.FAILED,
                    status_code=e.status_code,
                    error=(e.code or "failed", e.message),
                    latency_ms=latency,
                ),
            )
        except TransientError as e:
            for s in self._counters(msg.endpoint):
                s.retried += 1
                if isinstance(e, BudgetExhaustedError):
                    s.budget_exhausted += 1
            self._retry_notes.append(
                {
                    "job_id": msg.job_id,
                    "custom_id": msg.custom_id,
                    "attempt": attempt,
                    "error_code": e.code or "transient",
                    "error_message": e.message,
                    "status_code": e.status_code or 0,
                    "at": utc_now_iso(),
                }
            )
            delay = retry_delay_s(
                e, attempt, base_s=self.worker.config.retry_base_s, cap_s=self.worker.config.retry_max_s
            )
            self._retry_delays[record.receipt_handle] = delay
            self.worker.request_log.retrying(msg, e, delay)
            raise
        latency = int((time.monotonic() - started) * 1000)
        for s in self._counters(msg.endpoint):
            s.latencies_ms.append(latency)
        return await self._settle(
            msg, self._result(msg, attempt, RequestStatus.SUCCEEDED, reply=reply, latency_ms=latency)
        )

    async def _settle(self, msg: RequestMessage, result: RequestResult) -> str:
        """Store a request's outcome, and log it with the request's ids."""
        disposition = await self._store(result)
        self.worker.request_log.outcome(msg, result, duplicate=disposition == Disposition.DUPLICATE)
        return disposition

    async def _cancelled(self, job_id: str) -> bool:
        """Whether the job was cancelled, re-read at most every ``JOB_REFRESH_S`` (one
        BatchGetItem for every job of the batch), so a long invocation notices a cancel."""
        async with self._jobs_lock:
            if time.monotonic() - self._jobs_read_at > JOB_REFRESH_S:
                self._jobs_read_at = time.monotonic()
                self._jobs.update(await self.worker.store.known_jobs(self._jobs))
        job = self._jobs.get(job_id)
        return bool(job and job.cancel_requested)

    async def _call(self, endpoint: Endpoint, msg: RequestMessage) -> EndpointReply:
        """The request's answer, from a call of its own or one packed with others of its job
        (shared/packing.py), all within the deadline."""
        try:
            async with asyncio.timeout(self.deadline.remaining()):
                return await self.packer.call(
                    endpoint,
                    msg.url,
                    msg.body,
                    timeout_s=self.worker.config.call_timeout_s,
                    custom_id=msg.custom_id,
                    group=msg.job_id,
                )
        except TimeoutError as e:
            raise BudgetExhaustedError(
                "invocation deadline reached before the call finished", code="budget_exhausted"
            ) from e

    async def _call_endpoint(self, call: OutgoingCall) -> EndpointReply:
        """One model call, for one request or a packed group of one job (``call.group``):
        wait for a slot and for the endpoint's rate limits, unless the job was cancelled."""
        async with self.worker.limiter.slot():
            if await self._cancelled(str(call.group)):
                raise JobCancelledError(f"job {call.group} cancelled")
            permit = await self._permit(call)
            self._calling += len(call.custom_ids)
            try:
                reply = await self._send(call)
            finally:
                self._calling -= len(call.custom_ids)
            self.worker.throttle.settle(permit, reply.usage)
            return reply

    async def _permit(self, call: OutgoingCall) -> Permit:
        """The endpoint's leave to call: its global RPM/TPM (leased from the bucket) and any
        Retry-After it sent, waited for at most until a call could no longer finish."""
        size = len(call.custom_ids)
        permit = await self.worker.throttle.permit(
            call.endpoint.name,
            call.route,
            call.body,
            runtime=self.limits,
            wanted=lambda: self._calls_to_come(size),
            max_wait_s=self.deadline.remaining() - self.worker.config.min_call_s,
        )
        if permit.delayed:
            for s in self._counters(call.endpoint.name):
                s.rate_limited_calls += 1
                s.rate_limit_wait_s += permit.waited_s
        return permit

    def _counters(self, endpoint: str) -> tuple[EndpointStats, EndpointStats]:
        """The invocation's totals and ``endpoint``'s counts (published per endpoint,
        shared/observability.py); a name this worker does not serve counts as NO_ENDPOINT."""
        return self.stats.counters(endpoint if endpoint in self.worker.endpoints else NO_ENDPOINT)

    def _calls_to_come(self, per_call: int = 1) -> int:
        """Calls that may still be made (this one included), if each carries ``per_call``
        requests: the size a rate-limit lease need not exceed."""
        return max(1, math.ceil((self._open - self._writing - self._calling) / per_call))

    async def _send(self, call: OutgoingCall) -> EndpointReply:
        """The model call itself: its latency and overloads steer adaptive concurrency, and
        a 429 holds the endpoint's next calls back for its Retry-After."""
        cfg = self.worker.config
        # Not call.timeout_s: every request asked for the same call timeout (less the packer's
        # few milliseconds of waiting), and the deadline is applied here.
        timeout_s = self.deadline.timeout_for_call(cfg.call_timeout_s, min_call_s=cfg.min_call_s)
        endpoint = call.endpoint
        for s in self._counters(endpoint.name):
            s.calls += 1
        try:
            async with self.worker.concurrency.measured():
                try:
                    return await endpoint.call(call.route, call.body, timeout_s=timeout_s, custom_id=call.custom_id)
                except EndpointTimeoutError as e:
                    if timeout_s < cfg.call_timeout_s:  # cut short by the deadline, not by the call timeout
                        raise BudgetExhaustedError(e.message, code="budget_exhausted") from e
                    raise
        except TransientError as e:
            if e.status_code == 429:
                for s in self._counters(endpoint.name):
                    s.throttled += 1
                self.worker.throttle.throttled(endpoint.name, e.retry_after_s)
            raise

    def _result(
        self,
        msg: RequestMessage,
        attempt: int,
        status: RequestStatus,
        *,
        reply: EndpointReply | None = None,
        status_code: int | None = None,
        error: tuple[str, str] | None = None,
        latency_ms: int = 0,
    ) -> RequestResult:
        return RequestResult(
            job_id=msg.job_id,
            custom_id=msg.custom_id,
            line=msg.line,
            status=status,
            attempt=attempt,
            endpoint=msg.endpoint,
            latency_ms=latency_ms,
            status_code=reply.status_code if reply else status_code,
            request_id=reply.request_id if reply else None,
            response_body=reply.body if reply else None,
            error_code=error[0] if error else None,
            error_message=error[1] if error else None,
            usage=reply.usage if reply else Usage(),
            request_message=msg.encode() if status is RequestStatus.FAILED else None,
        )

    async def _store(self, result: RequestResult) -> str:
        self._writing += 1
        self._flush_if_all_waiting()
        try:
            async with asyncio.timeout(self.hard_stop.remaining()):
                first = await self.writer.put(result)
        except TimeoutError as e:
            raise TransientError(
                "the result store did not answer before the function's timeout", code="store_timeout"
            ) from e
        finally:
            self._writing -= 1
        counters = self._counters(result.endpoint)
        if not first:
            for s in counters:
                s.duplicates += 1
            return Disposition.DUPLICATE
        for s in counters:
            s.prompt_tokens += result.usage.prompt_tokens
            s.completion_tokens += result.usage.completion_tokens
            if result.status is RequestStatus.SUCCEEDED:
                s.succeeded += 1
            else:
                s.failed += 1
        return Disposition.STORED

    async def _invalid(self, record: SQSRecord, e: InvalidMessageError, attempt: int) -> str:
        """A message that breaks the schema fails alone: recorded against its request
        when its job and id can be read, dead-lettered with the reason when not."""
        if e.job_id and e.custom_id and e.job_id in self._jobs:
            line = 0
            try:
                raw_line = json.loads(record.body).get("line")
                line = raw_line if isinstance(raw_line, int) and raw_line > 0 else 0
            except (json.JSONDecodeError, AttributeError):
                pass
            result = RequestResult(
                job_id=e.job_id,
                custom_id=e.custom_id,
                line=line,
                status=RequestStatus.FAILED,
                attempt=attempt,
                endpoint="",
                error_code="invalid_message",
                error_message=e.message,
            )
            if (e.job_id, e.custom_id) in self._stored:
                for s in self._counters(result.endpoint):
                    s.duplicates += 1
                return Disposition.DUPLICATE
            return await self._store(result)
        return await self._dead_letter(record.body, e.message)

    async def _dead_letter(self, body: str, reason: str) -> str:
        log.warning("dead-lettering an unrecordable message", extra={"reason": reason, "body_bytes": len(body)})
        if self.worker.queue is None:
            raise UnreadableMessageError(reason, code="unreadable")
        await self.worker.queue.dead_letter(body, reason)
        self.stats.dead_lettered += 1
        return Disposition.DEAD_LETTERED

    def _flush_if_all_waiting(self) -> None:
        """When every record still open waits for its write, no other result can join the
        transaction: write now instead of waiting out ``RESULT_WRITE_WAIT_S``. Scheduled
        for the next turn of the loop, once the result being put has joined."""
        if self._open and self._writing >= self._open:
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        task = asyncio.get_running_loop().create_task(self.writer.drain())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def finish(self) -> None:
        await self.packer.aclose()
        self.stats.concurrency_limit = self.worker.limiter.limit
        try:
            async with asyncio.timeout(self.hard_stop.remaining()):
                await self._finish()
        except TimeoutError:
            log.warning("left retry notes and delays unwritten: the function's timeout is near")

    async def _finish(self) -> None:
        await self.writer.drain()
        # Both below are best effort: the failed records go back to SQS regardless; at worst
        # they come back after the queue's own visibility timeout, without their last error.
        if self._retry_notes:
            try:
                await self.worker.store.note_retries(self._retry_notes)
            except Exception:
                log.exception("could not write retry notes")
        if self.worker.queue is not None and self._retry_delays:
            try:
                await self.worker.queue.retry_later(self._retry_delays)
            except Exception:
                log.exception("could not set retry delays")
