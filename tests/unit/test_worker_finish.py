"""The worker publishes a job's finished event after writing its last results, and when the
publication fails it hands one of the job's records back to SQS, so its redelivery (a
duplicate, not called again) publishes the event (shared/worker/batch_run.py, shared/finish.py)."""

from __future__ import annotations

import asyncio
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
from shared.finish import JobFinisher
from shared.jobs import JobMeta
from shared.messages import RequestMessage
from shared.store.result_store import ResultStore
from tests.unit.test_finish import FakeBus

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def aws_and_model() -> Iterator[tuple[str, str, dict[str, str]]]:
    with MotoServer() as moto, SimulatorThread() as sim:
        stack = provision_stack(moto.url, parameter_overrides={"EndpointUrl": sim.url})
        yield moto.url, sim.url, stack.functions["Worker"].environment


def records(job_id: str, n: int) -> list[dict[str, Any]]:
    return [
        sqs_record(
            {
                "MessageId": f"m{i}",
                "ReceiptHandle": f"h{i}",
                "Body": RequestMessage(
                    v=1,
                    job_id=job_id,
                    custom_id=f"c{i}",
                    line=i + 1,
                    url="/v1/embeddings",
                    body={"model": "m", "input": "x"},
                ).encode(),
            },
            "arn:aws:sqs:us-east-1:1:q",
        )
        for i in range(n)
    ]


def test_a_failed_publication_hands_one_record_back_and_its_redelivery_publishes(
    aws_and_model: tuple[str, str, dict[str, str]],
) -> None:
    aws_url, model_url, env = aws_and_model
    config = WorkerConfig.from_env(env)
    loop = asyncio.new_event_loop()
    exits: list[Any] = []
    # GIVEN a bus that is down for the first invocation
    bus = FakeBus(failures=3)

    async def setup() -> Any:
        from shared.worker.processor import Worker

        ddb_cm = get_session().create_client(
            "dynamodb", region_name=REGION, endpoint_url=aws_url, aws_access_key_id="t", aws_secret_access_key="t"
        )
        ddb = await ddb_cm.__aenter__()
        http = aiohttp.ClientSession()
        exits.extend([ddb_cm, http])
        store = ResultStore(ddb, jobs_table=config.jobs_table, results_table=config.results_table)
        await store.create_job(JobMeta(job_id="job-fin", total=3, sealed=True, enqueued=3))
        finisher = JobFinisher(store, bus, backoff_s=0.0)
        return Worker(config, store, {"default": OpenAIHttpEndpoint("default", http, model_url)}, finisher=finisher)

    async def teardown() -> None:
        await exits[1].close()
        await exits[0].__aexit__(None, None, None)

    worker = loop.run_until_complete(setup())
    batch = records("job-fin", 3)
    try:
        # WHEN the batch holding the job's every request runs
        first = dict(worker.process({"Records": batch}, FakeLambdaContext("worker", 512, 30), loop))
        # THEN every result is stored, no event went out, and exactly one record comes back
        assert bus.events == []
        (handed_back,) = first["batchItemFailures"]
        # WHEN that record is redelivered (the bus is up again)
        again = [r for r in batch if r["messageId"] == handed_back["itemIdentifier"]]
        second = dict(worker.process({"Records": again}, FakeLambdaContext("worker", 512, 30), loop))
        # THEN the event goes out, once, and nothing comes back
        assert second["batchItemFailures"] == []
        assert [e["job_id"] for e in bus.events] == ["job-fin"]
        assert bus.events[0]["succeeded"] == 3
        third = dict(worker.process({"Records": again}, FakeLambdaContext("worker", 512, 30), loop))
        assert third["batchItemFailures"] == [] and len(bus.events) == 1
    finally:
        loop.run_until_complete(teardown())
        loop.close()
