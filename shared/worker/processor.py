"""The container's worker: one per Lambda container, reused by every invocation. Each
invocation's records run as a :class:`~shared.worker.batch_run.BatchRun` inside Powertools'
SQS batch processor, on the container's own event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType

from shared.budget import CallDurations, Deadline, LambdaContextLike
from shared.config import RuntimeLimits, WorkerConfig
from shared.endpoints.base import Endpoint
from shared.endpoints.failover import Failover
from shared.finish import JobFinisher
from shared.limits.adaptive import AdaptiveConcurrency
from shared.limits.limiter import AdjustableLimiter
from shared.limits.throttle import Throttle
from shared.packing import ListSupport
from shared.payloads import PayloadStore
from shared.queue_ops import QueueOps
from shared.request_log import RequestLog
from shared.store.result_store import ResultStore
from shared.worker.batch_run import BatchRun
from shared.worker.priority import PriorityGate
from shared.worker.stats import InvocationStats

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse, PartialItemFailures

log = logging.getLogger("llmbatch.worker")

#: Stop all work this long before Lambda's own timeout, whatever is still unwritten.
HARD_STOP_MARGIN_S = 0.5


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
        finisher: JobFinisher | None = None,
    ) -> None:
        self.payloads = payloads
        #: Publishes each job's finished event (shared/finish.py); None: no events.
        self.finisher = finisher
        self.config = config
        self.store = store
        self.endpoints = endpoints
        #: Routing by model and failover between endpoints, with each one's health (shared/endpoints/failover.py).
        self.failover = Failover(config.endpoints)
        self.queue = queue
        #: Holds lower-priority records back while a queue ahead has work (shared/worker/priority.py).
        self.priority = (
            PriorityGate(queue, check_every_s=config.priority_check_s, yield_delay_s=config.priority_yield_s)
            if queue is not None
            else None
        )
        self._limits = limits or (lambda: config.default_limits)
        self.limiter = AdjustableLimiter(config.default_limits.max_concurrency)
        self.concurrency = AdaptiveConcurrency(self.limiter)
        #: Without a bucket (tests that build a Worker by hand), rate limits are not enforced.
        self.throttle = throttle or Throttle(None)
        #: Which endpoints refuse packed inputs, learned once per container.
        self.list_support = ListSupport()
        self.request_log = RequestLog(payloads=config.log_payloads)
        #: What a call is expected to take: one that the deadline would cut is not started.
        self.call_durations = CallDurations()
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
        response = processor.response()
        if run.handed_back:
            handed_back: list[PartialItemFailures] = [{"itemIdentifier": m} for m in run.handed_back]
            response["batchItemFailures"] = [*response["batchItemFailures"], *handed_back]
        return response
