"""What a Lambda container keeps between invocations: one event loop, one HTTP connection
pool, one client per AWS service, and the worker built on them.

Clients and the aiohttp session belong to the loop they were made on, so the container
makes one loop and runs every invocation on it (``asyncio.run`` per invocation would make a
new loop each time and break the pools).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared.aws_http import aws_config, warm_tls
from shared.config import WorkerConfig
from shared.endpoints.factory import EndpointFactory
from shared.finish import EventBridgePublisher, FinishOutcome, JobFinisher
from shared.limits.rate_bucket import DynamoRateBucket
from shared.limits.source import LimitsSource
from shared.limits.throttle import Throttle
from shared.payloads import PayloadStore
from shared.queue_ops import QueueOps
from shared.store.result_store import ResultStore
from shared.worker.processor import ContainerLoopBatchProcessor, Worker

if TYPE_CHECKING:
    from shared.deadletter import DeadLetterRecorder

log = logging.getLogger("llmbatch.deadletter")


class Container:
    def __init__(self, loop: asyncio.AbstractEventLoop, worker: Worker, stack: AsyncExitStack) -> None:
        self.loop = loop
        self.worker = worker
        self._stack = stack

    @classmethod
    def create(cls, config: WorkerConfig | None = None) -> Container:
        config = config or WorkerConfig.from_env()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stack = AsyncExitStack()
        worker = loop.run_until_complete(_build_worker(config, stack))
        return cls(loop, worker, stack)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        asyncio.set_event_loop(self.loop)
        return dict(self.worker.process(event, context, self.loop))

    def close(self) -> None:
        self.loop.run_until_complete(self._stack.aclose())
        self.loop.close()


async def _build_worker(config: WorkerConfig, stack: AsyncExitStack) -> Worker:
    limits = config.default_limits.max_concurrency
    # The worker's own calls to DynamoDB, SQS and S3 are built by this code, not from user
    # input, and the services validate them anyway: the SDK's client-side check of every
    # parameter against the model cost a fifth of the client's CPU per call (a 25-put
    # TransactWriteItems: 7.4 ms with it, 5.8 without; issue 12). Model clients keep theirs
    # (shared/endpoints/factory.py): their bodies are users'.
    client_config = aws_config(
        max_pool_connections=max(10, limits),
        retries={"mode": "standard", "max_attempts": 5},
        parameter_validation=False,
    )
    aws = get_session()
    # The TLS context the clients share is made here, in the container's init (shared/aws_http.py).
    warm_tls(aws)
    ddb = await stack.enter_async_context(aws.create_client("dynamodb", config=client_config))
    payloads = None
    if config.payload_bucket:
        s3 = await stack.enter_async_context(aws.create_client("s3", config=client_config))
        payloads = PayloadStore(s3, config.payload_bucket)
    store = ResultStore(
        ddb,
        jobs_table=config.jobs_table,
        results_table=config.results_table,
        counter_shards=config.counter_shards,
        payloads=payloads,
    )
    endpoints = await EndpointFactory(stack, call_timeout_s=config.call_timeout_s, aws_session=aws).build(
        config.endpoints
    )
    sqs = await stack.enter_async_context(aws.create_client("sqs", config=client_config))
    queue = QueueOps(
        sqs,
        request_queue_url=config.request_queue_url,
        dead_letter_queue_url=config.dead_letter_queue_url,
        high_queue_url=config.high_priority_queue_url,
        low_queue_url=config.low_priority_queue_url,
    )
    # One bucket per endpoint, in the jobs table, shared by every container (shared/limits/rate_bucket.py).
    throttle = Throttle(DynamoRateBucket(ddb, config.jobs_table), overrides=config.rate_limit_overrides())
    finisher = await _finisher(aws, stack, store, config.event_bus_name, client_config)
    limits_source = LimitsSource(config)
    limits_source.warm()
    return Worker(
        config,
        store,
        endpoints,
        queue=queue,
        limits=limits_source,
        payloads=payloads,
        throttle=throttle,
        finisher=finisher,
    )


async def _finisher(
    session: Any, stack: AsyncExitStack, store: ResultStore, bus_name: str, config: AioConfig | None = None
) -> JobFinisher | None:
    """What publishes finished jobs' events, when the stack has a bus (EVENT_BUS_NAME)."""
    if not bus_name:
        return None
    events = await stack.enter_async_context(session.create_client("events", config=config or aws_config()))
    return JobFinisher(store, EventBridgePublisher(events, bus_name))


class DeadLetterContainer:
    """The DeadLetter function's container: one loop, one DynamoDB client, the recorder."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        recorder: DeadLetterRecorder,
        stack: AsyncExitStack,
        finisher: JobFinisher | None = None,
    ) -> None:
        self.loop = loop
        self.recorder = recorder
        self._stack = stack
        self.finisher = finisher

    @classmethod
    def create(cls, env: Mapping[str, str] | None = None) -> DeadLetterContainer:
        env = os.environ if env is None else env
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stack = AsyncExitStack()
        # Imported here: the Worker's cold start, which imports this module too, never needs it.
        from shared.deadletter import DeadLetterRecorder

        finisher: JobFinisher | None = None

        async def build() -> DeadLetterRecorder:
            nonlocal finisher
            session = get_session()
            ddb = await stack.enter_async_context(session.create_client("dynamodb", config=aws_config()))
            # Dead letters too big for an item are kept in the payload bucket by reference.
            payloads = None
            if env.get("PAYLOAD_BUCKET"):
                s3 = await stack.enter_async_context(session.create_client("s3", config=aws_config()))
                payloads = PayloadStore(s3, env["PAYLOAD_BUCKET"])
            store = ResultStore(
                ddb, jobs_table=env["JOBS_TABLE"], results_table=env["RESULTS_TABLE"], payloads=payloads
            )
            finisher = await _finisher(session, stack, store, env.get("EVENT_BUS_NAME", ""))
            return DeadLetterRecorder(store)

        recorder = loop.run_until_complete(build())
        return cls(loop, recorder, stack, finisher)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        asyncio.set_event_loop(self.loop)
        processor = ContainerLoopBatchProcessor(self.loop)
        with processor(records=event.get("Records", []), handler=self.recorder.handle_record, lambda_context=context):
            processor.async_process()
        response: dict[str, Any] = dict(processor.response())
        touched = self.recorder.take_touched()
        if self.finisher is not None and touched:
            # A failure recorded here may be a job's last request. A job whose event could not
            # be published gets one of its records handed back: its redelivery (a duplicate)
            # checks the job again, as the worker's does (shared/finish.py).
            budget_s = context.get_remaining_time_in_millis() / 1000 - 1.0 if context is not None else 30.0
            try:
                outcomes = self.loop.run_until_complete(
                    asyncio.wait_for(self.finisher.check(touched), max(0.1, budget_s))
                )
            except TimeoutError:
                log.warning("left jobs' finished events to their next check: the function's timeout is near")
                outcomes = {}
            failed = [{"itemIdentifier": touched[j]} for j, o in outcomes.items() if o is FinishOutcome.FAILED]
            response["batchItemFailures"] = [*response.get("batchItemFailures", []), *failed]
        return response

    def close(self) -> None:
        self.loop.run_until_complete(self._stack.aclose())
        self.loop.close()
