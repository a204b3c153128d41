"""Waiting for capacity is not an attempt: records the worker did not call are sent back as
fresh messages (their receive count starts again), and only calls that went out count
toward a request's attempts.

The worker runs in a container of its own against moto's server (SQS and DynamoDB over real
HTTP); the endpoint is a stand-in whose answers each test chooses. No poller runs: each test
receives the messages itself, so the receive counts and what is left on the queue are the
test's to read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.moto_server import MotoServer
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import REGION, ProvisionedStack, provision_stack
from shared.config import WorkerConfig
from shared.container import Container
from shared.endpoints.base import EndpointReply
from shared.errors import EndpointHTTPError
from shared.jobs import JobMeta
from shared.messages import RequestMessage, sign
from shared.results import RequestResult, Usage
from shared.store.result_store import ResultStore

SIGN_KEY = "0123456789abcdef0123456789abcdef"


class ScriptedEndpoint:
    """An endpoint whose answer each test sets: a reply after ``latency_s``, or an error."""

    name = "default"

    def __init__(self) -> None:
        self.latency_s = 0.0
        self.error: Exception | None = None
        self.calls: list[str] = []

    async def call(self, route: str, body: dict[str, Any], *, timeout_s: float, custom_id: str) -> EndpointReply:
        self.calls.append(custom_id)
        await asyncio.sleep(min(self.latency_s, timeout_s))
        if self.error is not None:
            raise self.error
        return EndpointReply(200, {"ok": custom_id}, Usage(3, 2), request_id=f"r-{custom_id}")


@pytest.fixture(scope="module")
def aws() -> Iterator[tuple[str, ProvisionedStack]]:
    with MotoServer() as moto:
        yield moto.url, provision_stack(moto.url)


@pytest.fixture
def worker(aws: tuple[str, ProvisionedStack], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Container]]:
    url, stack = aws
    made: list[Container] = []

    def make(**extra_env: str) -> Container:
        env = {
            **stack.functions["Worker"].environment,
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "LIMITS_MAX_AGE_S": "0",
            "WRITE_RESERVE_S": "1",
            **extra_env,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        c = Container.create(WorkerConfig.from_env())
        c.worker.endpoints = {"default": ScriptedEndpoint()}
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def set_limits(aws: tuple[str, ProvisionedStack]) -> Iterator[Callable[..., None]]:
    """Sets the live limits parameter (what the console's Limits screen writes); back to none after."""
    url, stack = aws
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=url, aws_access_key_id="t", aws_secret_access_key="t")

    def put(**limits: Any) -> None:
        ssm.put_parameter(Name=stack.resources.limits_parameter, Value=json.dumps(limits), Overwrite=True)

    yield put
    put()


def sqs(url: str) -> Any:
    return boto3.client("sqs", region_name=REGION, endpoint_url=url, aws_access_key_id="t", aws_secret_access_key="t")


def create_job(c: Container, job_id: str, total: int) -> None:
    c.loop.run_until_complete(
        c.worker.store.create_job(JobMeta(job_id=job_id, total=total, sealed=True, enqueued=total, sign_key=SIGN_KEY))
    )


def message(job_id: str, n: int, *, receives: int = 0) -> str:
    custom_id = f"req-{n}"
    return RequestMessage(
        v=1,
        job_id=job_id,
        custom_id=custom_id,
        line=n,
        url="/v1/chat/completions",
        body={"model": "m", "messages": [{"role": "user", "content": f"q{n}"}]},
        receives=receives,
        sig=sign(SIGN_KEY, job_id, custom_id, n),
    ).encode()


@pytest.fixture
def queue(aws: tuple[str, ProvisionedStack], request: pytest.FixtureRequest) -> str:
    """A request queue of the test's own (the worker's REQUEST_QUEUE_URL): nothing left over."""
    return str(sqs(aws[0]).create_queue(QueueName=f"requests-{request.node.name[:60]}")["QueueUrl"])


def receive_all(client: Any, queue_url: str, want: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(20):
        resp = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=60
        )
        got += resp.get("Messages", [])
        if len(got) >= want:
            break
    return got


def invoke(c: Container, queue_url: str, messages: list[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    event = {"Records": [sqs_record(m, "arn:aws:sqs:us-east-1:123456789012:q") for m in messages]}
    return c.handle(event, FakeLambdaContext("worker", 512, timeout_s))


def results(c: Container, job_id: str) -> list[RequestResult]:
    async def collect() -> list[RequestResult]:
        return [r async for r in c.worker.store.iter_results(job_id)]

    return c.loop.run_until_complete(collect())


def test_records_the_deadline_left_uncalled_come_back_as_fresh_messages_not_as_failures(
    aws: tuple[str, ProvisionedStack], queue: str, worker: Callable[..., Container], set_limits: Callable[..., None]
) -> None:
    url, _ = aws
    q = queue
    client = sqs(url)
    # GIVEN one call at a time, each taking 0.4 s, and ten records for an invocation with
    # about 2 s of calls in it and 1.5 s after them for the writes and the copies (room for
    # a loaded CI machine); the records have been received twice already
    set_limits(max_concurrency=1)
    c = worker(REQUEST_QUEUE_URL=q, MIN_CALL_S="0.1", WRITE_RESERVE_S="2")
    endpoint = c.worker.endpoints["default"]
    assert isinstance(endpoint, ScriptedEndpoint)
    endpoint.latency_s = 0.4
    create_job(c, "job-deadline", 10)
    client.send_message_batch(
        QueueUrl=q, Entries=[{"Id": str(n), "MessageBody": message("job-deadline", n)} for n in range(1, 11)]
    )
    first = receive_all(client, q, 10)
    for m in first:
        client.change_message_visibility(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    again = receive_all(client, q, 10)
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in again} == {"2"}

    # WHEN the worker handles them
    response = invoke(c, q, again, timeout_s=4.0)

    # THEN no record is handed back as a failure; the ones called are stored, and each of
    # the others is on the queue again as a new message that remembers one earlier receive
    assert response["batchItemFailures"] == []
    stored = {r.custom_id for r in results(c, "job-deadline")}
    assert stored and len(stored) < 10
    assert set(endpoint.calls) == stored
    for m in again:  # SQS deletes what the worker did not report as failed
        client.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
    copies = receive_all(client, q, 10 - len(stored))
    bodies = [json.loads(m["Body"]) for m in copies]
    assert sorted(b["custom_id"] for b in bodies) == sorted({f"req-{n}" for n in range(1, 11)} - stored)
    assert {b["receives"] for b in bodies} == {1}
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in copies} == {"1"}


def test_a_record_waiting_on_the_rate_limit_is_deferred_until_capacity_without_using_an_attempt(
    aws: tuple[str, ProvisionedStack], queue: str, worker: Callable[..., Container], set_limits: Callable[..., None]
) -> None:
    url, _ = aws
    q = queue
    client = sqs(url)
    # GIVEN a limit of one request per minute on a fresh bucket, and five records
    set_limits(rpm_limit=1)
    c = worker(REQUEST_QUEUE_URL=q)
    create_job(c, "job-rpm", 5)
    client.send_message_batch(
        QueueUrl=q, Entries=[{"Id": str(n), "MessageBody": message("job-rpm", n)} for n in range(1, 6)]
    )
    batch = receive_all(client, q, 5)

    # WHEN the worker handles them
    response = invoke(c, q, batch, timeout_s=5)

    # THEN none is called (a new bucket starts empty: the first call may go in a minute),
    # none failed, and all five wait on the queue as fresh copies, delayed until then
    assert response["batchItemFailures"] == []
    assert c.worker.endpoints["default"].calls == []  # type: ignore[attr-defined]
    assert results(c, "job-rpm") == []
    assert c.worker.last_stats.deferred == 5
    attrs = client.get_queue_attributes(
        QueueUrl=q, AttributeNames=["ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessages"]
    )["Attributes"]
    assert (attrs["ApproximateNumberOfMessagesDelayed"], attrs["ApproximateNumberOfMessages"]) == ("5", "0")


def test_a_request_whose_calls_failed_max_attempts_times_is_recorded_failed_with_its_last_error(
    aws: tuple[str, ProvisionedStack], queue: str, worker: Callable[..., Container]
) -> None:
    url, _ = aws
    q = queue
    client = sqs(url)
    # GIVEN an endpoint answering 503, a request that used 7 of its 8 attempts in earlier
    # copies, and one on its first attempt
    c = worker(REQUEST_QUEUE_URL=q, MAX_ATTEMPTS="8")
    endpoint = c.worker.endpoints["default"]
    assert isinstance(endpoint, ScriptedEndpoint)
    endpoint.error = EndpointHTTPError("the endpoint answered 503", status_code=503, code="http_503")
    create_job(c, "job-exhausted", 2)
    client.send_message_batch(
        QueueUrl=q,
        Entries=[
            {"Id": "1", "MessageBody": message("job-exhausted", 1, receives=7)},
            {"Id": "2", "MessageBody": message("job-exhausted", 2)},
        ],
    )
    batch = receive_all(client, q, 2)
    by_id = {json.loads(m["Body"])["custom_id"]: m for m in batch}

    # WHEN the worker handles them
    response = invoke(c, q, batch, timeout_s=5)

    # THEN the first is recorded failed after 8 attempts with the endpoint's last error, and
    # only the second goes back to SQS to be tried again
    assert response["batchItemFailures"] == [{"itemIdentifier": by_id["req-2"]["MessageId"]}]
    (failed,) = results(c, "job-exhausted")
    assert (failed.custom_id, failed.error_code, failed.attempt, failed.status_code) == (
        "req-1",
        "retries_exhausted",
        8,
        503,
    )
    assert "http_503: the endpoint answered 503" in (failed.error_message or "")
    assert json.loads(failed.request_message or "{}").get("receives", 0) == 0


class FailingLookups:
    """A DynamoDB client whose BatchGetItem fails: stands for DynamoDB being unreachable."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def batch_get_item(self, **kwargs: Any) -> Any:
        raise ConnectionError("DynamoDB unreachable")


def test_when_the_start_of_batch_lookup_fails_every_record_is_deferred_and_none_is_judged(
    aws: tuple[str, ProvisionedStack], queue: str, worker: Callable[..., Container]
) -> None:
    url, _ = aws
    q = queue
    client = sqs(url)
    # GIVEN three good records, and DynamoDB unreachable for the start-of-batch lookup
    c = worker(REQUEST_QUEUE_URL=q)
    create_job(c, "job-lookup", 3)
    store = c.worker.store
    c.worker.store = ResultStore(
        FailingLookups(store._ddb), jobs_table=store.jobs_table, results_table=store.results_table
    )
    client.send_message_batch(
        QueueUrl=q, Entries=[{"Id": str(n), "MessageBody": message("job-lookup", n)} for n in range(1, 4)]
    )
    batch = receive_all(client, q, 3)

    # WHEN the worker handles them
    response = invoke(c, q, batch, timeout_s=5)

    # THEN nobody is called or dead-lettered on a lookup that did not happen: all three wait
    # on the queue as fresh copies, a few seconds out
    assert response["batchItemFailures"] == []
    assert c.worker.endpoints["default"].calls == []  # type: ignore[attr-defined]
    assert c.worker.last_stats.deferred == 3 and c.worker.last_stats.dead_lettered == 0
    attrs = client.get_queue_attributes(QueueUrl=q, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert int(attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"]) == 3
