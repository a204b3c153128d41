"""Processing one SQS batch: validate, skip what is done, call the model concurrently under
one deadline, store every answer, and hand the rest back to SQS.

The pieces, each in its own module: :mod:`shared.budget` (the deadline),
:mod:`shared.limits.limiter` (calls in flight) and :mod:`shared.limits.adaptive` (its size, when adaptive),
:mod:`shared.limits.throttle` (the endpoint's global rate limits and Retry-After),
:mod:`shared.endpoints` (the model), :mod:`shared.store.result_writer` (batched, conditional writes),
:mod:`shared.worker.outcomes` (what becomes of each record, as values).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from shared.backoff import deferral_delay_s, retry_delay_s
from shared.budget import Deadline
from shared.config import RuntimeLimits
from shared.endpoints.base import Endpoint, EndpointReply
from shared.endpoints.failover import Choice
from shared.errors import (
    BudgetExhaustedError,
    EndpointTimeoutError,
    InvalidMessageError,
    PermanentError,
    TransientError,
    UnreadableMessageError,
)
from shared.finish import FinishOutcome
from shared.jobs import JobMeta
from shared.limits.throttle import Permit
from shared.messages import RequestMessage, belongs_to, decode_body, signed_by
from shared.packing import OutgoingCall, Packer
from shared.payloads import OFFLOAD_MAX_BYTES, request_body_prefix
from shared.queue_ops import Copy, Requeuer
from shared.results import RequestResult, RequestStatus
from shared.store.result_writer import ResultWriter
from shared.worker.outcomes import (
    CANCELLED,
    Disposition,
    JobCancelledError,
    decode_record,
    exhausted_result,
    invalid_result,
    request_result,
    retry_note,
)
from shared.worker.priority import BatchSource
from shared.worker.stats import NO_ENDPOINT, EndpointStats, InvocationStats

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from shared.worker.processor import Worker

log = logging.getLogger("llmbatch.worker")

#: How often a running invocation re-reads its jobs (to notice a cancel).
JOB_REFRESH_S = 2.0
#: When a job's finished event could not be published, one of its records comes back after
#: this long: its redelivery (a duplicate, never called again) checks the job again.
FINISH_RETRY_S = 10
#: How long a result waits for others to share its transaction. Under a rate limit answers
#: trickle in (40 a second at 2,400 RPM): a short wait would write a few per transaction, and
#: this one writes tens. Nothing waits on it but the record's own handler (its slot is free
#: already), and the last records of a batch never do (``BatchRun._flush_if_all_waiting``).
RESULT_WRITE_WAIT_S = 1.0


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
        # Throttled writes are retried until the hard stop, not for a fixed count.
        self.writer = ResultWriter(
            worker.store, max_wait_s=RESULT_WRITE_WAIT_S, give_up_at=time.monotonic() + self.hard_stop.remaining()
        )
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
        #: Each record's message, decoded once (by message id), or why it could not be.
        self._decoded: dict[str, RequestMessage | InvalidMessageError] = {}
        #: Requests whose model call went out in this invocation: only those used an attempt.
        self._called: set[tuple[str, str]] = set()
        #: Set when the start-of-batch lookup failed: every record is deferred, none judged.
        self._lookup_error: TransientError | None = None
        queue = worker.queue
        self.requeuer = Requeuer(queue) if queue is not None and queue.can_requeue else None
        #: The queue of the batch's records (its priority), set by ``prepare``.
        self.source = BatchSource.of([], None)
        self._retry_notes: list[dict[str, Any]] = []
        self._retry_delays: dict[str, int] = {}
        self._jobs_read_at = time.monotonic()
        self._jobs_lock = asyncio.Lock()
        #: Jobs whose results this invocation wrote or found written (each with one of its
        #: records): they may have finished (shared/finish.py).
        self._touched: dict[str, SQSRecord] = {}
        #: Records handed back to SQS after they were stored: their job's finished event failed.
        self.handed_back: list[str] = []

    async def prepare(self, records: list[dict[str, Any]]) -> None:
        """Decode every record once, then one batched read for the whole batch: the jobs
        named, and the requests that already have an answer (redelivered or enqueued twice)
        so they are not paid for twice. Only ids that passed the schema (and so DynamoDB's
        key rules) are looked up: no message can make this read fail for its neighbours."""
        self._open = len(records)
        self.source = BatchSource.of(records, self.worker.queue.queues if self.worker.queue else None)
        keys: list[tuple[str, str]] = []
        for r in records:
            decoded = decode_record(r.get("body"))
            self._decoded[str(r.get("messageId", id(r)))] = decoded
            job_id, custom_id = decoded.job_id, decoded.custom_id
            if job_id and custom_id:  # read (and checked) even when the rest is invalid
                keys.append((job_id, custom_id))
        if not keys:
            return
        self._jobs_read_at = time.monotonic()
        try:
            async with asyncio.timeout(self.hard_stop.remaining()):
                jobs, stored = await asyncio.gather(
                    self.worker.store.known_jobs(j for j, _ in keys), self.worker.store.stored_results(keys)
                )
        except Exception as e:  # DynamoDB unreachable or slow: nobody is judged on it
            log.warning("start-of-batch lookup failed; deferring the batch: %r", e)
            self._lookup_error = TransientError(
                f"the start-of-batch lookup failed: {type(e).__name__}", code="lookup_failed", retry_after_s=5.0
            )
            return
        self._jobs, self._stored = jobs, stored

    async def handle_record(self, record: SQSRecord) -> str:
        try:
            disposition = await self._handle_record(record)
            if disposition in (Disposition.STORED, Disposition.DUPLICATE):
                decoded = self._decoded.get(record.message_id)
                if decoded is not None and decoded.job_id:
                    self._touched.setdefault(decoded.job_id, record)
            return disposition
        finally:
            self._open -= 1
            self._flush_if_all_waiting()

    async def _handle_record(self, record: SQSRecord) -> str:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        decoded = self._decoded.get(record.message_id) or decode_record(record.body)
        if isinstance(decoded, InvalidMessageError):
            return await self._invalid(record, decoded, receive_count)
        wire = decoded
        #: Receives of earlier copies that counted, and this one.
        attempt = wire.receives + receive_count
        if self._lookup_error is not None:
            return await self._defer(wire, receive_count, self._lookup_error)
        job = self._jobs.get(wire.job_id)
        if job is None:
            return await self._dead_letter(record.body, f"unknown job {wire.job_id!r}")
        if not belongs_to(job.sign_key, wire):
            return await self._dead_letter(record.body, f"not a request of job {wire.job_id!r} (signature)")
        self.stats.delivered(job.job_id, record.body, claim_check=wire.body_ref is not None)
        if (wire.job_id, wire.custom_id) in self._stored:
            for s in self._counters(wire.endpoint):
                s.duplicates += 1
            return Disposition.DUPLICATE
        if job.cancel_requested:
            return await self._settle(wire, request_result(wire, attempt, RequestStatus.CANCELLED, error=CANCELLED))

        gate = self.worker.priority
        if gate is not None and await gate.holds_back(self.source.priority, max_wait_s=self.deadline.remaining()):
            return await self._defer(wire, receive_count, gate.error)
        endpoint = self.worker.endpoints.get(wire.endpoint)
        if endpoint is None:
            return await self._settle(
                wire,
                request_result(
                    wire,
                    attempt,
                    RequestStatus.FAILED,
                    error=("unknown_endpoint", f"no endpoint named {wire.endpoint!r}"),
                ),
            )
        try:
            msg = await self._with_body(wire)
        except PermanentError as e:
            return await self._settle(
                wire, request_result(wire, attempt, RequestStatus.FAILED, error=(e.code or "failed", e.message))
            )
        except TransientError as e:
            return await self._defer(wire, receive_count, e)
        # Routing by model and failover (shared/endpoints/failover.py): the endpoint to call
        # now, which the result names; a failed call is counted against it.
        choice = self.worker.failover.choose(
            wire.endpoint, msg.url, msg.body, retry=attempt > 1, last=attempt >= self.worker.config.max_attempts
        )
        endpoint = self.worker.endpoints.get(choice.endpoint, endpoint)
        started = time.monotonic()
        try:
            reply = await self._call(endpoint, msg, choice)
        except JobCancelledError:
            return await self._settle(msg, request_result(wire, attempt, RequestStatus.CANCELLED, error=CANCELLED))
        except PermanentError as e:
            latency = int((time.monotonic() - started) * 1000)
            return await self._settle(
                msg,
                request_result(
                    wire,
                    attempt,
                    RequestStatus.FAILED,
                    status_code=e.status_code,
                    error=(e.code or "failed", e.message),
                    latency_ms=latency,
                    endpoint=endpoint.name,
                ),
            )
        except TransientError as e:
            if (msg.job_id, msg.custom_id) not in self._called:
                return await self._defer(wire, receive_count, e)
            for s in self._counters(endpoint.name):
                s.retried += 1
                if isinstance(e, BudgetExhaustedError):
                    s.budget_exhausted += 1
            if attempt >= self.worker.config.max_attempts:
                return await self._settle(msg, exhausted_result(wire, attempt, e, endpoint=endpoint.name))
            self._retry_notes.append(retry_note(msg, attempt, e))
            delay = retry_delay_s(
                e, attempt, base_s=self.worker.config.retry_base_s, cap_s=self.worker.config.retry_max_s
            )
            self._retry_delays[record.receipt_handle] = delay
            self.worker.request_log.retrying(msg, e, delay)
            raise
        latency = int((time.monotonic() - started) * 1000)
        for s in self._counters(endpoint.name):
            s.latencies_ms.append(latency)
        result = request_result(
            wire, attempt, RequestStatus.SUCCEEDED, reply=reply, latency_ms=latency, endpoint=endpoint.name
        )
        return await self._settle(msg, result)

    async def _with_body(self, wire: RequestMessage) -> RequestMessage:
        """The message with its body, read from the payload bucket when it came as a
        ``body_ref`` (the claim check): only under its own job's prefix, only up to the
        largest body submit offloads, and only while the deadline lasts.

        Raises
        ------
        PermanentError
            The reference points outside the job, at nothing, or at something too big.
        TransientError
            The bucket did not answer in time (the record is deferred, not judged).
        """
        if wire.body_ref is None:
            return wire
        payloads = self.worker.payloads
        if payloads is None:
            raise InvalidMessageError("body_ref needs the stack's payload bucket")
        if not wire.body_ref.startswith(request_body_prefix(wire.job_id)):
            raise InvalidMessageError(f"body_ref must be under {request_body_prefix(wire.job_id)!r}")
        try:
            async with asyncio.timeout(self.deadline.remaining()):
                raw = await payloads.get(wire.body_ref, max_bytes=OFFLOAD_MAX_BYTES)
        except TimeoutError as e:
            raise TransientError("the payload bucket did not answer in time", code="body_fetch") from e
        return wire.model_copy(update={"body": decode_body(raw), "body_ref": None})

    async def _defer(self, wire: RequestMessage, receive_count: int, error: TransientError) -> str:
        """Send a fresh copy of a record that was not called, so SQS can delete this one
        without counting the receive (shared/queue_ops.py). Without a queue to send to, the
        record goes back to SQS as before."""
        if self.requeuer is None:
            raise error
        copy = wire.model_copy(update={"receives": wire.receives + receive_count - 1}).encode()
        self._writing += 1
        self._flush_if_all_waiting()
        try:
            async with asyncio.timeout(self.hard_stop.remaining()):
                await self.requeuer.put(
                    Copy(copy, deferral_delay_s(error), group=wire.job_id, queue_url=self.source.queue_url)
                )
        except TimeoutError as e:
            raise TransientError("could not send the deferred copy before the timeout", code="requeue") from e
        finally:
            self._writing -= 1
        for s in self._counters(wire.endpoint):
            s.deferred += 1
            if isinstance(error, BudgetExhaustedError):
                s.budget_exhausted += 1
        return Disposition.DEFERRED

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
                try:
                    self._jobs.update(await self.worker.store.known_jobs(self._jobs))
                except Exception as e:  # a cancel is noticed on the next read instead
                    log.warning("could not re-read the batch's jobs", extra={"error": type(e).__name__})
        job = self._jobs.get(job_id)
        return bool(job and job.cancel_requested)

    async def _call(self, endpoint: Endpoint, msg: RequestMessage, choice: Choice | None = None) -> EndpointReply:
        """The request's answer, from a call of its own or one packed with others of its job
        (shared/packing.py), all within the deadline; then the routing ``choice`` is done with."""
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
        finally:
            if choice is not None:
                self.worker.failover.release(choice)

    async def _call_endpoint(self, call: OutgoingCall) -> EndpointReply:
        """One model call, for one request or a packed group of one job (``call.group``):
        wait for a slot and for the endpoint's rate limits, unless the job was cancelled."""
        async with self.worker.limiter.slot(key=call.group):
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
        durations = self.worker.call_durations
        timeout_s = self.deadline.timeout_for_call(
            cfg.call_timeout_s, min_call_s=max(cfg.min_call_s, min(durations.expected_s(), cfg.call_timeout_s))
        )
        endpoint = call.endpoint
        for s in self._counters(endpoint.name):
            s.calls += 1
        # From here the request has used an attempt: the call goes out (and may be billed).
        self._called.update((str(call.group), cid) for cid in call.custom_ids)
        try:
            async with self.worker.concurrency.measured():
                try:
                    started = time.monotonic()
                    reply = await endpoint.call(call.route, call.body, timeout_s=timeout_s, custom_id=call.custom_id)
                    durations.observe(time.monotonic() - started)
                    self.worker.failover.observe(endpoint.name, None, wait_budget_s=0.0)
                    return reply
                except EndpointTimeoutError as e:
                    if timeout_s < cfg.call_timeout_s:  # cut short by the deadline, not by the call timeout
                        raise BudgetExhaustedError(e.message, code="budget_exhausted") from e
                    raise
        except TransientError as e:
            if e.status_code == 429:
                for s in self._counters(endpoint.name):
                    s.throttled += 1
                self.worker.throttle.throttled(endpoint.name, e.retry_after_s)
            # Its health, for failover: judged as the permit judges a wait (``_permit``).
            self.worker.failover.observe(
                endpoint.name, e, wait_budget_s=self.deadline.remaining() - self.worker.config.min_call_s
            )
            raise

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
        """A message that breaks the schema fails alone: recorded against its request when
        its job and id can be read and it is that job's (its signature verifies), and
        dead-lettered with the reason when not."""
        if self._lookup_error is not None and e.job_id:
            raise self._lookup_error
        job = self._jobs.get(e.job_id) if e.job_id else None
        if job is None or not e.custom_id or not signed_by(job.sign_key, e.job_id or "", e.custom_id, e.line, e.sig):
            return await self._dead_letter(record.body, e.message)
        self.stats.delivered(job.job_id, record.body, claim_check=False)
        if (job.job_id, e.custom_id) in self._stored:
            for s in self._counters(NO_ENDPOINT):
                s.duplicates += 1
            return Disposition.DUPLICATE
        return await self._store(invalid_result(job.job_id, e.custom_id, e, attempt))

    async def _dead_letter(self, body: str, reason: str) -> str:
        log.warning("dead-lettering an unrecordable message", extra={"reason": reason, "body_bytes": len(body)})
        if self.worker.queue is None:
            raise UnreadableMessageError(reason, code="unreadable")
        try:
            async with asyncio.timeout(self.hard_stop.remaining()):
                await self.worker.queue.dead_letter(body, reason)
        except TimeoutError as e:
            raise TransientError("could not dead-letter the message before the timeout", code="dead_letter") from e
        self.stats.dead_lettered += 1
        return Disposition.DEAD_LETTERED

    async def _check_finished(self) -> None:
        """After every result is written: publish the finished event of each job this
        invocation may have finished (shared/finish.py). A job whose event failed gets one
        of its records handed back, so SQS brings it back to check again; the invocation's
        other records are unaffected."""
        finisher = self.worker.finisher
        if finisher is None or not self._touched:
            return
        outcomes = await finisher.check(self._touched)
        for job_id, outcome in outcomes.items():
            if outcome is FinishOutcome.FAILED:
                record = self._touched[job_id]
                self.handed_back.append(record.message_id)
                self._retry_delays[record.receipt_handle] = FINISH_RETRY_S

    def _flush_if_all_waiting(self) -> None:
        """When every record still open waits for its write, no other result can join the
        transaction: write now instead of waiting out ``RESULT_WRITE_WAIT_S``. Scheduled
        for the next turn of the loop, once the result being put has joined."""
        if self._open and self._writing >= self._open:
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        if self.requeuer is not None:
            self.requeuer.flush()
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
        if self.requeuer is not None:
            await self.requeuer.drain()
        await self._check_finished()
        # Both below are best effort: the failed records go back to SQS regardless; at worst
        # they come back after the queue's own visibility timeout, without their last error.
        if self._retry_notes:
            try:
                await self.worker.store.note_retries(self._retry_notes)
            except Exception:
                log.exception("could not write retry notes")
        if self.worker.queue is not None and self._retry_delays:
            try:
                await self.worker.queue.retry_later(self._retry_delays, queue_url=self.source.queue_url)
            except Exception:
                log.exception("could not set retry delays")
