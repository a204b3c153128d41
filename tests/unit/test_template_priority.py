"""template.yaml's priority queues: one request queue per priority, each like the normal one
(the same dead-letter queue and receive count), each read by the worker through a mapping of
its own with a valid concurrency share, and the worker's queue permissions limited to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmbatch.client.stack import StackResources
from llmbatch.local.template import function_spec, load_template
from shared.priority import Priority

ROOT = Path(__file__).resolve().parents[2]
SQS_EVENT_MAX_CONCURRENCY_MIN = 2  # AWS's lowest accepted ScalingConfig.MaximumConcurrency
#: The request queue of each priority, and the worker variable that names it.
QUEUES = {
    Priority.HIGH: ("RequestQueueHigh", "HIGH_PRIORITY_QUEUE_URL", "HighPriorityQueueUrl"),
    Priority.NORMAL: ("RequestQueue", "REQUEST_QUEUE_URL", "RequestQueueUrl"),
    Priority.LOW: ("RequestQueueLow", "LOW_PRIORITY_QUEUE_URL", "LowPriorityQueueUrl"),
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def target(value: Any) -> str:
    """The logical id of ``!Ref X`` / ``!GetAtt X.Attr``."""
    ((fn, arg),) = value.items()
    return str(arg) if fn == "Ref" else str(arg[0])


def stand_in(value: Any) -> str:
    """What an output's value names: the logical id it refers to, or the value itself."""
    return target(value) if isinstance(value, dict) and {"Ref", "Fn::GetAtt"} >= value.keys() else str(value)


def worker_events(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker's SQS event sources, by the queue each reads."""
    events = function_spec(template, "Worker")["Events"].values()
    sqs = [e["Properties"] for e in events if e["Type"] == "SQS"]
    by_queue = {target(e["Queue"]): e for e in sqs}
    assert len(by_queue) == len(sqs), "two event sources read one queue"
    return by_queue


def worker_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    policies = function_spec(template, "Worker")["Policies"]
    return [s for p in policies if isinstance(p, dict) for s in p.get("Statement", [])]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_worker_reads_one_queue_per_priority_with_the_same_batching(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the worker's event sources
    events = worker_events(template)

    # THEN there is one per priority's queue, batching like the normal one
    assert set(events) == {name for name, _, _ in QUEUES.values()}
    normal = events["RequestQueue"]
    for queue, event in events.items():
        same = ("BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes")
        assert {k: event[k] for k in same} == {k: normal[k] for k in same}, queue


def test_every_request_queue_is_set_up_like_the_normal_one(template: dict[str, Any]) -> None:
    # GIVEN the normal request queue: its visibility, retention, SSE and dead-letter redrive
    resources = template["Resources"]
    normal = resources["RequestQueue"]["Properties"]
    assert target(normal["RedrivePolicy"]["deadLetterTargetArn"]) == "DeadLetterQueue"

    # WHEN / THEN the high and low ones have the very same settings, the redrive among them
    for name, _, _ in QUEUES.values():
        assert resources[name]["Type"] == "AWS::SQS::Queue"
        assert resources[name]["Properties"] == normal, name


def test_each_mapping_has_a_valid_concurrency_share_and_low_the_smaller(template: dict[str, Any]) -> None:
    # GIVEN each mapping's MaximumConcurrency (a parameter)
    params = template["Parameters"]
    shares = {
        queue: params[target(e["ScalingConfig"]["MaximumConcurrency"])] for queue, e in worker_events(template).items()
    }

    # WHEN / THEN none can go below AWS's minimum of 2, high and normal take the worker's
    # share, and low by default a smaller one
    for queue, p in shares.items():
        assert int(p["MinValue"]) >= SQS_EVENT_MAX_CONCURRENCY_MIN, queue
        assert int(p["Default"]) >= SQS_EVENT_MAX_CONCURRENCY_MIN, queue
    assert shares["RequestQueueHigh"] is shares["RequestQueue"] is params["WorkerMaxConcurrency"]
    assert int(shares["RequestQueueLow"]["Default"]) < int(params["WorkerMaxConcurrency"]["Default"])


def test_the_worker_is_told_each_queue_and_may_touch_only_those(template: dict[str, Any]) -> None:
    # GIVEN the worker's environment and its SQS statements
    env = function_spec(template, "Worker")["Environment"]["Variables"]
    sqs = [s for s in worker_statements(template) if any(str(a).startswith("sqs:") for a in as_list(s["Action"]))]
    granted: dict[str, set[str]] = {}
    for s in sqs:
        for action in as_list(s["Action"]):
            granted.setdefault(action, set()).update(target(r) for r in as_list(s["Resource"]))
    request_queues = {name for name, _, _ in QUEUES.values()}

    # WHEN / THEN each variable names its priority's queue; copies and retry delays may go to
    # every request queue and nowhere else; only the queues ahead of another are read for
    # their backlog (the low one is ahead of none)
    for name, variable, _ in QUEUES.values():
        assert target(env[variable]) == name
    assert granted["sqs:SendMessage"] == request_queues
    assert granted["sqs:ChangeMessageVisibility"] == request_queues
    ahead = {QUEUES[p][0] for p in Priority if p is not Priority.LOW}
    assert granted["sqs:GetQueueAttributes"] == ahead


def test_the_outputs_name_every_request_queue_and_the_client_reads_them(template: dict[str, Any]) -> None:
    # GIVEN the stack's outputs, as a deployed stack would give them
    outputs = {name: f"https://sqs/{stand_in(spec['Value'])}" for name, spec in template["Outputs"].items()}

    # WHEN the client reads them
    resources = StackResources.from_outputs("s", "us-east-1", outputs)

    # THEN it finds each priority's queue
    for priority, (name, _, output) in QUEUES.items():
        assert output in outputs
        assert resources.queue_url(priority) == f"https://sqs/{name}"
