"""The worker run in-process, as tests that drive it invocation by invocation make it: its
DynamoDB client (moto's server over real HTTP), the store with the jobs given, the
endpoints the factory builds from the stack's configuration; and SQS records as Lambda
hands them over."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.session import get_session

from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import REGION
from shared.config import WorkerConfig
from shared.endpoints.factory import EndpointFactory
from shared.jobs import JobMeta
from shared.messages import RequestMessage
from shared.store.result_store import ResultStore


async def start_worker(
    exits: AsyncExitStack, aws_url: str, config: WorkerConfig, jobs: Iterable[JobMeta]
) -> tuple[Any, ResultStore]:
    """A :class:`shared.worker.processor.Worker` and its store, with ``jobs`` created; its
    clients and endpoints close with ``exits``."""
    from shared.worker.processor import Worker

    ddb = await exits.enter_async_context(
        get_session().create_client(
            "dynamodb", region_name=REGION, endpoint_url=aws_url, aws_access_key_id="t", aws_secret_access_key="t"
        )
    )
    store = ResultStore(ddb, jobs_table=config.jobs_table, results_table=config.results_table)
    for meta in jobs:
        await store.create_job(meta)
    endpoints = await EndpointFactory(exits, call_timeout_s=config.call_timeout_s).build(config.endpoints)
    return Worker(config, store, endpoints), store


def request_record(msg: RequestMessage, receives: int = 1) -> dict[str, Any]:
    """``msg`` as the worker's event holds it, delivered ``receives`` times."""
    ids = f"{msg.job_id}-{msg.custom_id}"
    return sqs_record(
        {
            "MessageId": ids,
            "ReceiptHandle": f"h-{ids}",
            "Body": msg.encode(),
            "Attributes": {"ApproximateReceiveCount": str(receives)},
        },
        "arn:aws:sqs:us-east-1:1:q",
    )
