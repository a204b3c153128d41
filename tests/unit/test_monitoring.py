"""The template's alarms and dashboard match what the worker really publishes."""

from __future__ import annotations

import json

from aws_lambda_powertools import Metrics

from local_stack.provision import DEFAULT_TEMPLATE
from local_stack.template import Resolver, load_template, parameter_values
from shared.observability import publish_invocation
from shared.worker import InvocationStats

TEMPLATE = load_template(DEFAULT_TEMPLATE)
RESOURCES = TEMPLATE["Resources"]


def alarms() -> dict[str, dict]:
    return {k: v["Properties"] for k, v in RESOURCES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}


def test_alarms_watch_dead_letters_queue_age_function_errors_and_throttles() -> None:
    watched = {(p["Namespace"], p["MetricName"]) for p in alarms().values()}
    assert watched >= {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
    }
    dlq_alarm = next(p for p in alarms().values() if p["MetricName"] == "ApproximateNumberOfMessagesVisible")
    assert dlq_alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}


def test_the_dashboard_charts_every_metric_the_worker_publishes() -> None:
    # GIVEN the names the worker really emits
    metrics = Metrics(namespace="llmbatch", service="worker")
    publish_invocation(metrics, InvocationStats(calls=1, succeeded=1, latencies_ms=[5]), endpoint="default")
    emitted = {m["Name"] for m in metrics.serialize_metric_set()["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    metrics.clear_metrics()

    # WHEN the dashboard body is resolved as CloudFormation would
    resolver = Resolver(TEMPLATE, parameter_values(TEMPLATE), {"AWS::Region": "us-east-1"})
    resolver.attrs = {"RequestQueue": {"QueueName": "q"}, "DeadLetterQueue": {"QueueName": "d"}}
    body = json.loads(resolver.resolve(RESOURCES["Dashboard"]["Properties"]["DashboardBody"]))

    # THEN it is valid JSON and charts each of them ("." repeats the row above's name)
    charted: set[str] = set()
    for widget in body["widgets"]:
        for row in widget["properties"]["metrics"]:
            if row[0] == "llmbatch" or row[0] == ".":
                charted.add(row[1])
    charted.discard(".")
    assert emitted <= charted
