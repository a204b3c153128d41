"""Priority routing without AWS: which queues are ahead of which, which queue a record came
from (its eventSourceARN) and where its copies go, where the client sends a job, and the
copies' SendMessageBatch entries."""

from __future__ import annotations

import pytest

from llmbatch.client.client import _priority
from llmbatch.client.stack import StackResources
from shared.errors import ConfigError
from shared.priority import DEFAULT_PRIORITY, Priority, PriorityQueues, queue_name
from shared.queue_ops import Copy
from shared.worker.priority import BatchSource

URLS = {
    Priority.HIGH: "https://sqs.us-east-1.amazonaws.com/123456789012/s-RequestQueueHigh-AB12",
    Priority.NORMAL: "https://sqs.us-east-1.amazonaws.com/123456789012/s-RequestQueue-CD34",
    Priority.LOW: "https://sqs.us-east-1.amazonaws.com/123456789012/s-RequestQueueLow-EF56",
}
QUEUES = PriorityQueues.of(normal=URLS[Priority.NORMAL], high=URLS[Priority.HIGH], low=URLS[Priority.LOW])


def arn(url: str) -> str:
    return f"arn:aws:sqs:us-east-1:123456789012:{url.rsplit('/', 1)[-1]}"


def resources(**urls: str) -> StackResources:
    return StackResources("s", "us-east-1", URLS[Priority.NORMAL], "dlq", "jobs", "results", "/s/limits", "w", **urls)


def test_each_priority_waits_only_for_those_above_it() -> None:
    assert Priority.HIGH.ahead == ()
    assert Priority.NORMAL.ahead == (Priority.HIGH,)
    assert Priority.LOW.ahead == (Priority.HIGH, Priority.NORMAL)
    assert DEFAULT_PRIORITY is Priority.NORMAL


@pytest.mark.parametrize("priority", list(Priority))
def test_a_record_is_known_by_its_queue_and_its_copies_go_back_there(priority: Priority) -> None:
    # GIVEN a batch from the queue of ``priority``, as its mapping hands it over
    records = [{"eventSourceARN": arn(URLS[priority]), "body": "{}"}] * 3

    # WHEN / THEN its priority and its copies' queue are that queue's
    assert queue_name(arn(URLS[priority])) == queue_name(URLS[priority])
    assert QUEUES.priority_of(arn(URLS[priority])) is priority
    assert BatchSource.of(records, QUEUES) == BatchSource(priority, URLS[priority])


def test_a_record_of_a_queue_the_worker_does_not_know_is_a_normal_one_as_before_priorities() -> None:
    # GIVEN records of another queue, and a worker of a stack that has only the normal queue
    records = [{"eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:elsewhere"}]
    old = PriorityQueues.of(normal=URLS[Priority.NORMAL])

    # WHEN / THEN they are normal, and their copies go to the normal queue
    assert QUEUES.priority_of(records[0]["eventSourceARN"]) is None
    assert BatchSource.of(records, QUEUES) == BatchSource(Priority.NORMAL, URLS[Priority.NORMAL])
    assert BatchSource.of([{"eventSourceARN": arn(URLS[Priority.HIGH])}], old).queue_url == URLS[Priority.NORMAL]
    assert BatchSource.of([], None) == BatchSource(Priority.NORMAL, None)


def test_a_copy_names_its_queue_for_the_sender_only_not_in_the_entry() -> None:
    entry = Copy("body", delay_s=5, group="job-1", queue_url=URLS[Priority.LOW]).entry("0")
    assert entry == {"Id": "0", "MessageBody": "body", "DelaySeconds": 5, "MessageGroupId": "job-1"}


def test_the_client_sends_each_priority_to_its_queue_and_refuses_what_the_stack_lacks() -> None:
    # GIVEN a stack with the three queues, and one deployed before priorities
    new = resources(high_priority_queue_url=URLS[Priority.HIGH], low_priority_queue_url=URLS[Priority.LOW])
    old = resources()

    # WHEN / THEN each priority has its queue on the new stack; the old one has the normal only
    assert {p: new.queue_url(p) for p in Priority} == URLS
    assert old.queue_url(Priority.NORMAL) == URLS[Priority.NORMAL]
    with pytest.raises(ConfigError, match="no high priority queue"):
        old.queue_url(Priority.HIGH)


def test_a_priority_is_one_of_the_three_names() -> None:
    assert _priority("low") is Priority.LOW
    with pytest.raises(ConfigError, match="priority must be one of high, normal, low, got 'urgent'"):
        _priority("urgent")
