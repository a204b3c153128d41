"""The LanePoller function's container: one event loop, the clients, the poller built on
them (kept between invocations, as the worker's container is: shared/container.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import asdict
from typing import Any

import aiohttp
from aiobotocore.session import get_session

from shared.aws_http import aws_config
from shared.budget import Deadline, LambdaContextLike
from shared.config import WorkerConfig
from shared.finish import EventBridgePublisher, JobFinisher
from shared.lanes.parts import LaneTable
from shared.lanes.poller import LanePoller
from shared.lanes.registry import ApiBuilder, LaneClients
from shared.payloads import PayloadStore
from shared.store.result_store import ResultStore

#: Seconds of the invocation kept back from the poller's work (its last writes, the return).
RESERVE_S = 5.0


class LaneContainer:
    def __init__(self, loop: asyncio.AbstractEventLoop, poller: LanePoller, stack: AsyncExitStack) -> None:
        self.loop = loop
        self.poller = poller
        self._stack = stack

    @classmethod
    def create(cls, env: Mapping[str, str] | None = None) -> LaneContainer:
        env = os.environ if env is None else env
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stack = AsyncExitStack()
        poller = loop.run_until_complete(_build(WorkerConfig.from_env(env), env, stack))
        return cls(loop, poller, stack)

    def handle(self, event: Mapping[str, Any], context: LambdaContextLike | None) -> dict[str, Any]:
        asyncio.set_event_loop(self.loop)
        deadline = Deadline.from_context(context, reserve_s=RESERVE_S) if context is not None else Deadline.after(60.0)
        report = self.loop.run_until_complete(self.poller.run(deadline))
        return {**asdict(report), "states": dict(report.states)}

    def close(self) -> None:
        self.loop.run_until_complete(self._stack.aclose())
        self.loop.close()


async def _build(config: WorkerConfig, env: Mapping[str, str], stack: AsyncExitStack) -> LanePoller:
    session = get_session()
    client_config = aws_config(retries={"mode": "standard", "max_attempts": 5})
    ddb = await stack.enter_async_context(session.create_client("dynamodb", config=client_config))
    s3 = await stack.enter_async_context(session.create_client("s3", config=client_config))
    payloads = PayloadStore(s3, config.payload_bucket)
    store = ResultStore(
        ddb,
        jobs_table=config.jobs_table,
        results_table=config.results_table,
        counter_shards=config.counter_shards,
        payloads=payloads,
    )
    clients: dict[tuple[str, str | None, str | None], Any] = {("s3", None, None): s3}
    http: list[aiohttp.ClientSession] = []

    async def http_session() -> aiohttp.ClientSession:
        if not http:
            http.append(await stack.enter_async_context(aiohttp.ClientSession()))
        return http[0]

    async def aws_client(service: str, region: str | None, endpoint_url: str | None) -> Any:
        key = (service, region, endpoint_url)
        if key not in clients:
            made = session.create_client(service, region_name=region, endpoint_url=endpoint_url, config=client_config)
            clients[key] = await stack.enter_async_context(made)
        return clients[key]

    builder = ApiBuilder(
        LaneClients(
            http_session=http_session,
            aws_client=aws_client,
            bucket=config.payload_bucket,
            role_arn=env.get("BATCH_ROLE_ARN", ""),
            call_timeout_s=config.call_timeout_s,
        )
    )
    finisher = None
    if config.event_bus_name:
        events = await stack.enter_async_context(session.create_client("events", config=client_config))
        finisher = JobFinisher(store, EventBridgePublisher(events, config.event_bus_name))
    return LanePoller(
        store, LaneTable(store.dynamo, config.jobs_table), payloads, config.endpoints, builder.api, finisher=finisher
    )
