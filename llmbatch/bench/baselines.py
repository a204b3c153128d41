"""The two baselines, on the same events, endpoint and tables as our worker.

* ``sequential``: the loop most samples use: for each record, one HTTP call (``requests``)
  and one ``put_item`` (boto3); a record whose call fails is returned in
  ``batchItemFailures``.
* ``gather``: Powertools' ``AsyncBatchProcessor`` with ``async_process_partial_response``:
  every record of the batch at once (an unbounded ``asyncio.gather``), one aiohttp call and
  one aiobotocore ``put_item`` each. Its HTTP session and DynamoDB client are made once per
  container, on the loop Powertools runs on (its default limits: 100 connections per
  aiohttp session, 10 per aiobotocore client, as a sample would leave them).

Both store the same item our worker stores (``RequestResult.to_item``), so the bytes
written are equal; neither keeps job counters, skips duplicates or respects a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from llmbatch.bench.harness import BatchOutcome, BenchStack
from shared.endpoints.openai_http import join_url
from shared.results import RequestResult, RequestStatus, Usage
from shared.store.item_size import to_ddb


def _item(msg: dict[str, Any], status_code: int, body: Any, latency_ms: float, request_id: str | None) -> dict:
    return to_ddb(
        RequestResult(
            job_id=msg["job_id"],
            custom_id=msg["custom_id"],
            line=int(msg["line"]),
            status=RequestStatus.SUCCEEDED,
            attempt=1,
            endpoint=msg.get("endpoint", "default"),
            latency_ms=int(latency_ms),
            status_code=status_code,
            request_id=request_id,
            response_body=body,
            usage=Usage.from_body(body),
        ).to_item()
    )


class SequentialBaseline:
    name = "sequential"

    def __init__(self, stack: BenchStack) -> None:
        import boto3
        import requests

        self._sim_url = stack.sim_url
        self._table = stack.results_table
        self._http = requests.Session()
        self._ddb = boto3.client("dynamodb", endpoint_url=stack.aws_url)
        self._calls: dict[str, Counter[str]] = {"dynamodb": Counter()}

    def handle(self, event: dict[str, Any]) -> BatchOutcome:
        out = BatchOutcome()
        failures = []
        for record in event["Records"]:
            try:
                msg = json.loads(record["body"])
                started = time.monotonic()
                resp = self._http.post(join_url(self._sim_url, msg["url"]), json=msg["body"], timeout=60)
                resp.raise_for_status()
                body = resp.json()
                latency = (time.monotonic() - started) * 1000
                self._calls["dynamodb"]["put_item"] += 1
                self._ddb.put_item(
                    TableName=self._table,
                    Item=_item(msg, resp.status_code, body, latency, resp.headers.get("x-request-id")),
                )
            except Exception:
                failures.append({"itemIdentifier": record["messageId"]})
                continue
            out.succeeded += 1
            out.latencies_ms.append(latency)
        out.returned = len(failures)
        return out

    def aws_calls(self) -> dict[str, Counter[str]]:
        return self._calls

    def close(self) -> None:
        self._http.close()
        self._ddb.close()


@contextlib.contextmanager
def _lambda_environment() -> Iterator[None]:
    """Powertools' async processor uses the current loop only inside Lambda (it looks for
    LAMBDA_TASK_ROOT), and ``asyncio.run`` (a new loop per invocation) outside it."""
    saved = os.environ.get("LAMBDA_TASK_ROOT")
    os.environ["LAMBDA_TASK_ROOT"] = os.getcwd()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LAMBDA_TASK_ROOT", None)
        else:
            os.environ["LAMBDA_TASK_ROOT"] = saved


class GatherBaseline:
    name = "gather"

    def __init__(self, stack: BenchStack) -> None:
        import aiohttp
        from aiobotocore.session import get_session

        self._sim_url = stack.sim_url
        self._table = stack.results_table
        self._calls: dict[str, Counter[str]] = {"dynamodb": Counter()}
        self._loop = asyncio.new_event_loop()
        self._stack = contextlib.AsyncExitStack()

        async def build() -> tuple[Any, Any]:
            session = await self._stack.enter_async_context(aiohttp.ClientSession())
            ddb = await self._stack.enter_async_context(get_session().create_client("dynamodb"))
            return session, ddb

        asyncio.set_event_loop(self._loop)
        self._session, self._ddb = self._loop.run_until_complete(build())
        self._latencies: list[float] = []
        self._succeeded = 0

    async def _record_handler(self, record: Any) -> None:
        msg = json.loads(record.body)
        started = time.monotonic()
        async with self._session.post(join_url(self._sim_url, msg["url"]), json=msg["body"]) as resp:
            resp.raise_for_status()
            body = await resp.json()
            status, request_id = resp.status, resp.headers.get("x-request-id")
        latency = (time.monotonic() - started) * 1000
        self._calls["dynamodb"]["put_item"] += 1
        await self._ddb.put_item(TableName=self._table, Item=_item(msg, status, body, latency, request_id))
        self._succeeded += 1
        self._latencies.append(latency)

    def handle(self, event: dict[str, Any]) -> BatchOutcome:
        from aws_lambda_powertools.utilities.batch import (
            AsyncBatchProcessor,
            EventType,
            async_process_partial_response,
        )
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

        self._latencies, self._succeeded = [], 0
        processor = AsyncBatchProcessor(event_type=EventType.SQS)
        asyncio.set_event_loop(self._loop)
        with _lambda_environment():
            try:
                response = async_process_partial_response(
                    event=event, record_handler=self._record_handler, processor=processor
                )
                returned = len(response.get("batchItemFailures", []))
            except BatchProcessingError:  # every record failed: Lambda returns the whole batch
                returned = len(event["Records"])
        return BatchOutcome(succeeded=self._succeeded, returned=returned, latencies_ms=list(self._latencies))

    def aws_calls(self) -> dict[str, Counter[str]]:
        return self._calls

    def close(self) -> None:
        self._loop.run_until_complete(self._stack.aclose())
        self._loop.close()
