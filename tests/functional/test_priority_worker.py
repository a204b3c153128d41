"""The worker's side of job priority: a record is held back while a queue ahead of its own
has work, as a fresh copy on its own queue that keeps its receives (never an attempt, so never
nearer the dead-letter queue), with one backlog read per queue ahead, not one per record; a
record's retry delay is set on its own queue.

The worker runs in a container of its own against moto's server, as in test_deferral.py: each
test receives the messages itself and invokes the handler with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmbatch.local.lambda_runtime import FakeLambdaContext
from llmbatch.local.poller import sqs_record
from llmbatch.local.provision import ACCOUNT_ID, REGION, ProvisionedStack
from shared.container import Container
from shared.errors import EndpointHTTPError
from shared.messages import decode_message
from shared.priority import queue_name
from tests.functional import test_deferral as deferral
from tests.functional.test_deferral import ScriptedEndpoint, create_job, message, results, sqs

#: The moto server with the stack, and the worker's container (test_deferral.py's fixtures).
aws = deferral.aws
worker = deferral.worker

#: Short waits, so a held-back copy or a retried message comes back within seconds; counts
#: read once per test (a container made later reads them afresh).
FAST = {"PRIORITY_CHECK_S": "600", "PRIORITY_YIELD_S": "1", "RETRY_BASE_S": "1", "RETRY_MAX_S": "1"}


@pytest.fixture
def queues(aws: tuple[str, ProvisionedStack], request: pytest.FixtureRequest) -> dict[str, str]:
    """The test's own high, normal and low request queues, and the worker's variables naming them."""
    client = sqs(aws[0])
    name = request.node.name[:50]
    urls = {p: str(client.create_queue(QueueName=f"{p}-{name}")["QueueUrl"]) for p in ("high", "normal", "low")}
    return {
        **urls,
        "env:HIGH_PRIORITY_QUEUE_URL": urls["high"],
        "env:REQUEST_QUEUE_URL": urls["normal"],
        "env:LOW_PRIORITY_QUEUE_URL": urls["low"],
    }


def env_of(queues: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("env:"): v for k, v in queues.items() if k.startswith("env:")}


def receive(client: Any, queue_url: str, want: int, wait_s: int = 0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(10):
        resp = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            VisibilityTimeout=60,
            WaitTimeSeconds=wait_s,
        )
        got += resp.get("Messages", [])
        if len(got) >= want:
            break
    return got


def invoke_from(c: Container, queue_url: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Records as the queue's event source mapping hands them over (its ARN on each)."""
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name(queue_url)}"
    return c.handle({"Records": [sqs_record(m, arn) for m in messages]}, FakeLambdaContext("worker", 512, 10))


def counts(client: Any, queue_url: str) -> tuple[int, int, int]:
    """(waiting, in flight, delayed)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    a = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    w, f, d = (int(a[n]) for n in names)
    return w, f, d


def calls_of(c: Container) -> list[str]:
    endpoint = c.worker.endpoints["default"]
    assert isinstance(endpoint, ScriptedEndpoint)
    return endpoint.calls


def test_a_normal_record_waits_on_its_own_queue_while_the_high_queue_has_work_then_is_served(
    aws: tuple[str, ProvisionedStack], queues: dict[str, str], worker: Callable[..., Container]
) -> None:
    client = sqs(aws[0])
    c = worker(**env_of(queues), **FAST)
    # GIVEN a message on the high-priority queue, and ten normal records that were received
    # twice before (their copies say so)
    client.send_message(QueueUrl=queues["high"], MessageBody="high work")
    create_job(c, "job-normal", 10)
    client.send_message_batch(
        QueueUrl=queues["normal"],
        Entries=[{"Id": str(n), "MessageBody": message("job-normal", n, receives=2)} for n in range(1, 11)],
    )
    batch = receive(client, queues["normal"], 10)
    assert len(batch) == 10

    # WHEN the worker handles them
    response = invoke_from(c, queues["normal"], batch)

    # THEN none is called or failed: all ten wait as fresh copies on the normal queue (none on
    # the others), still with two receives, after one read of the high queue's counts
    assert response["batchItemFailures"] == []
    assert calls_of(c) == []
    assert c.worker.last_stats.deferred == 10
    assert c.worker.queue is not None and c.worker.queue.calls["get_queue_attributes"] == 1
    assert counts(client, queues["normal"]) == (0, 10, 10)  # the originals until the mapping deletes them
    assert counts(client, queues["low"]) == (0, 0, 0)
    for m in batch:
        client.delete_message(QueueUrl=queues["normal"], ReceiptHandle=m["ReceiptHandle"])
    copies = receive(client, queues["normal"], 10, wait_s=5)
    assert sorted(decode_message(m["Body"]).receives for m in copies) == [2] * 10

    # WHEN the high queue is empty again and the copies come round (to a container that
    # reads the counts afresh)
    (high,) = receive(client, queues["high"], 1)
    client.delete_message(QueueUrl=queues["high"], ReceiptHandle=high["ReceiptHandle"])
    later = worker(**env_of(queues), **FAST)
    response = invoke_from(later, queues["normal"], copies)

    # THEN each is called once and stored on its third attempt: the wait used none
    assert response["batchItemFailures"] == []
    assert sorted(calls_of(later)) == sorted(f"req-{n}" for n in range(1, 11))
    stored = results(later, "job-normal")
    assert len(stored) == 10 and {r.attempt for r in stored} == {3}


def test_a_low_record_waits_round_after_round_without_nearing_the_dead_letter_queue(
    aws: tuple[str, ProvisionedStack], queues: dict[str, str], worker: Callable[..., Container]
) -> None:
    client = sqs(aws[0])
    c = worker(**env_of(queues), **FAST, MAX_ATTEMPTS="2")
    # GIVEN work on the normal queue (the high one is empty) and a low record
    client.send_message(QueueUrl=queues["normal"], MessageBody="normal work")
    create_job(c, "job-low", 1)
    client.send_message(QueueUrl=queues["low"], MessageBody=message("job-low", 1))

    # WHEN it comes round more times than the request has attempts
    for _ in range(3):
        (m,) = receive(client, queues["low"], 1, wait_s=5)
        assert decode_message(m["Body"]).receives == 0
        assert invoke_from(c, queues["low"], [m])["batchItemFailures"] == []
        client.delete_message(QueueUrl=queues["low"], ReceiptHandle=m["ReceiptHandle"])

    # THEN it was never called nor judged: it waits, as a copy with no receive counted
    assert calls_of(c) == []
    assert results(c, "job-low") == []
    assert counts(client, queues["low"])[2] == 1


def test_a_high_record_is_never_held_back_and_its_retry_delay_is_set_on_its_own_queue(
    aws: tuple[str, ProvisionedStack], queues: dict[str, str], worker: Callable[..., Container]
) -> None:
    client = sqs(aws[0])
    c = worker(**env_of(queues), **FAST)
    # GIVEN work on the normal and low queues, and a high record whose call fails with a 503
    client.send_message(QueueUrl=queues["normal"], MessageBody="normal work")
    client.send_message(QueueUrl=queues["low"], MessageBody="low work")
    create_job(c, "job-high", 1)
    client.send_message(QueueUrl=queues["high"], MessageBody=message("job-high", 1))
    endpoint = c.worker.endpoints["default"]
    assert isinstance(endpoint, ScriptedEndpoint)
    endpoint.error = EndpointHTTPError("the endpoint answered 503", status_code=503, code="http_503")
    (m,) = receive(client, queues["high"], 1)

    # WHEN the worker handles it
    response = invoke_from(c, queues["high"], [m])

    # THEN it is called at once without reading any queue's counts, and handed back with a
    # retry delay of a second on the high queue (not the 60 s it was received with)
    assert calls_of(c) == ["req-1"]
    assert response["batchItemFailures"] == [{"itemIdentifier": m["MessageId"]}]
    assert c.worker.queue is not None and c.worker.queue.calls["get_queue_attributes"] == 0
    (again,) = receive(client, queues["high"], 1, wait_s=5)
    assert again["MessageId"] == m["MessageId"]
