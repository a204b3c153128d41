"""The worker never runs into Lambda's timeout, even when the result store is slow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import REGION, provision_stack
from llmbatch.local.simulator import SimulatorThread
from shared.config import WorkerConfig
from shared.endpoints.openai_http import OpenAIHttpEndpoint
from shared.jobs import JobMeta
from shared.messages import RequestMessage
from shared.store.result_store import ResultStore

FUNCTION_TIMEOUT_S = 3.0


class SlowTransactions:
    """A DynamoDB client whose transactions take longer than the function may run: stands
    for a throttled or degraded DynamoDB, which moto does not emulate."""

    def __init__(self, client: Any, delay_s: float) -> None:
        self._client = client
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        await asyncio.sleep(self._delay_s)
        return await self._client.transact_write_items(**kwargs)


@pytest.fixture(scope="module")
def aws_and_model() -> Iterator[tuple[str, str, dict[str, str]]]:
    with MotoServer() as moto, SimulatorThread() as sim:
        stack = provision_stack(moto.url, parameter_overrides={"EndpointUrl": sim.url})
        yield moto.url, sim.url, stack.functions["Worker"].environment


def test_a_slow_store_makes_records_go_back_to_sqs_before_the_function_times_out(
    aws_and_model: tuple[str, str, dict[str, str]],
) -> None:
    aws_url, model_url, env = aws_and_model
    config = WorkerConfig.from_env({**env, "WRITE_RESERVE_S": "1", "MIN_CALL_S": "0.1"})

    loop = asyncio.new_event_loop()  # the container's loop: clients are made on it
    exits: list[Any] = []

    async def setup() -> Any:
        from shared.worker.processor import Worker

        ddb_cm = get_session().create_client(
            "dynamodb", region_name=REGION, endpoint_url=aws_url, aws_access_key_id="t", aws_secret_access_key="t"
        )
        ddb = await ddb_cm.__aenter__()
        http = aiohttp.ClientSession()
        exits.extend([ddb_cm, http])
        # GIVEN a job, and a store whose writes take 10 s in a function with a 3 s timeout
        await ResultStore(ddb, jobs_table=config.jobs_table, results_table=config.results_table).create_job(
            JobMeta(job_id="job-slow", total=3, sealed=True, enqueued=3)
        )
        store = ResultStore(
            SlowTransactions(ddb, 10.0), jobs_table=config.jobs_table, results_table=config.results_table
        )
        return Worker(config, store, {"default": OpenAIHttpEndpoint("default", http, model_url)})

    async def teardown() -> None:
        await exits[1].close()
        await exits[0].__aexit__(None, None, None)

    worker = loop.run_until_complete(setup())
    records = [
        sqs_record(
            {
                "MessageId": f"m{i}",
                "ReceiptHandle": f"h{i}",
                "Body": RequestMessage(
                    v=1,
                    job_id="job-slow",
                    custom_id=f"c{i}",
                    line=i + 1,
                    url="/v1/embeddings",
                    body={"model": "m", "input": "x"},
                ).encode(),
            },
            "arn:aws:sqs:us-east-1:1:q",
        )
        for i in range(3)
    ]
    # WHEN a batch runs
    started = time.monotonic()
    try:
        response = dict(
            worker.process({"Records": records}, FakeLambdaContext("worker", 512, FUNCTION_TIMEOUT_S), loop)
        )
        took = time.monotonic() - started
    finally:
        loop.run_until_complete(teardown())
        loop.close()

    # THEN it gave up on the writes instead of waiting them out (which would have stored all
    # three and run far past its timeout), handing every unwritten record back to SQS
    assert took < 10.0
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["m0", "m1", "m2"]
