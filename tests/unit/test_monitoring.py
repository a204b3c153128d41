"""The template's alarms and dashboard match what the worker really publishes."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from aws_lambda_powertools import Metrics

from llmbatch.local.provision import DEFAULT_TEMPLATE
from llmbatch.local.template import Resolver, load_template, parameter_values
from shared.observability import ENDPOINT_DIMENSION, publish_invocation
from shared.worker.stats import EndpointStats, InvocationStats

TEMPLATE = load_template(DEFAULT_TEMPLATE)
RESOURCES = TEMPLATE["Resources"]


def worker_metrics_names() -> tuple[str, str]:
    """The namespace and service the worker's handler publishes under, read from its source:
    importing it would give the "llmbatch" loggers its JSON handler for the whole session."""
    spec = importlib.util.find_spec("functions.worker.app")
    assert spec is not None and spec.origin is not None
    found = re.search(r'Metrics\(namespace="([^"]+)", service="([^"]+)"\)', Path(spec.origin).read_text())
    assert found, "functions/worker/app.py no longer makes its Metrics as this test reads them"
    return found[1], found[2]


NAMESPACE, SERVICE = worker_metrics_names()


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


#: ``SEARCH('{namespace,dim,...} term="value" ...', 'stat', period)`` as the dashboard writes it.
SEARCH = re.compile(r"""SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)',\s*'[^']+'""")
TERM = re.compile(r'(\w+)="([^"]*)"')

#: A metric as CloudWatch tells it apart: namespace, name, and its dimensions' names and the
#: values pinned (a search leaves the endpoint's open, so it matches every endpoint).
MetricKey = tuple[str, str, frozenset[str], frozenset[tuple[str, str]]]


def emitted_metrics(capsys: pytest.CaptureFixture[str]) -> set[MetricKey]:
    """Every metric the worker's handler publishes, read from its EMF documents."""
    metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
    stats = InvocationStats(dead_lettered=1, by_endpoint={"default": EndpointStats(calls=1, latencies_ms=[5])})
    capsys.readouterr()
    try:
        publish_invocation(metrics, stats)
        docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
        docs.append(dict(metrics.serialize_metric_set()))
    finally:
        metrics.clear_metrics()
    found: set[MetricKey] = set()
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        (dims,) = directive["Dimensions"]
        pinned = frozenset((d, doc[d]) for d in dims if d != ENDPOINT_DIMENSION)
        for m in directive["Metrics"]:
            found.add((directive["Namespace"], m["Name"], frozenset(dims), pinned))
    return found


def charted_metrics(widgets: list[dict]) -> set[MetricKey]:
    """Every metric the dashboard's widgets chart: metric rows ("." repeats the row above's
    field, "..." all of them) and SEARCH expressions."""
    found: set[MetricKey] = set()
    for widget in widgets:
        above: list[str] = []
        for row in widget["properties"]["metrics"]:
            fields = [f for f in row if isinstance(f, str)]
            if fields == ["..."]:
                fields = above
            fields = [above[i] if f == "." else f for i, f in enumerate(fields)]
            above = fields
            if fields:
                namespace, name, *pairs = fields
                dims = dict(zip(pairs[::2], pairs[1::2], strict=True))
                found.add((namespace, name, frozenset(dims), frozenset(dims.items())))
            for expression in (f["expression"] for f in row if isinstance(f, dict) and "expression" in f):
                for search in SEARCH.finditer(expression):
                    namespace, *dim_names = search["schema"].split(",")
                    terms = dict(TERM.findall(search["terms"]))
                    name = terms.pop("MetricName")
                    found.add((namespace, name, frozenset(dim_names), frozenset(terms.items())))
    return found


def test_the_dashboard_charts_every_metric_the_worker_publishes_and_no_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the metrics the worker really emits: per endpoint, and the container's own
    emitted = emitted_metrics(capsys)
    assert {name for _, name, dims, _ in emitted if ENDPOINT_DIMENSION in dims} >= {"RequestsSucceeded", "ModelLatency"}

    # WHEN the dashboard body is resolved as CloudFormation would
    resolver = Resolver(TEMPLATE, parameter_values(TEMPLATE), {"AWS::Region": "us-east-1"})
    resolver.attrs = {
        "RequestQueueHigh": {"QueueName": "qh"},
        "RequestQueue": {"QueueName": "q"},
        "RequestQueueLow": {"QueueName": "ql"},
        "DeadLetterQueue": {"QueueName": "d"},
    }
    body = json.loads(resolver.resolve(RESOURCES["Dashboard"]["Properties"]["DashboardBody"]))

    # THEN it is valid JSON and charts each of them, with their dimensions, and names no
    # metric of ours that the worker never emits
    charted = {key for key in charted_metrics(body["widgets"]) if key[0] == NAMESPACE}
    assert charted == emitted
