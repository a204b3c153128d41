"""Metrics per endpoint: one EMF document for each endpoint an invocation used, and the
container's own metrics without the endpoint dimension."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from shared.observability import ENDPOINT_DIMENSION, MAX_LATENCY_VALUES, latency_sample, publish_invocation
from shared.worker.stats import NO_ENDPOINT, EndpointStats, InvocationStats


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics(namespace="llmbatch", service="worker")
    yield m
    m.clear_metrics()  # Metrics share their state across instances


def printed_documents(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def value(doc: dict[str, Any], name: str) -> float:
    """A count's value (Powertools writes even one value as a list)."""
    v = doc[name]
    return float(sum(v)) if isinstance(v, list) else float(v)


def dimension_names(doc: dict[str, Any]) -> list[list[str]]:
    return [list(names) for names in doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]


def test_each_endpoint_gets_one_document_with_its_own_counts(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an invocation that used two endpoints, one of them for more calls than EMF takes
    # values in a document, and a request that named no endpoint the worker serves
    rng = random.Random(7)
    slow_tail = [rng.randint(10, 90) for _ in range(240)] + [5000]
    stats = InvocationStats(
        dead_lettered=2,
        concurrency_limit=12,
        by_endpoint={
            "default": EndpointStats(calls=241, succeeded=241, prompt_tokens=900, latencies_ms=slow_tail),
            "claude": EndpointStats(calls=3, succeeded=2, failed=1, throttled=1, rate_limit_wait_s=1.25),
            NO_ENDPOINT: EndpointStats(failed=1),
        },
    )

    # WHEN it is published
    publish_invocation(metrics, stats)
    service_level = dict(metrics.serialize_metric_set())

    # THEN each endpoint has exactly one document, under its own dimension, with its counts
    docs = printed_documents(capsys.readouterr().out)
    by_endpoint = {d[ENDPOINT_DIMENSION]: d for d in docs}
    assert len(docs) == len(by_endpoint) == 3
    assert {n: dimension_names(d) for n, d in by_endpoint.items()} == {
        n: [[ENDPOINT_DIMENSION, "service"]] for n in ("default", "claude", NO_ENDPOINT)
    }
    claude = by_endpoint["claude"]
    assert [value(claude, n) for n in ("ModelCalls", "RequestsSucceeded", "RequestsFailed")] == [3, 2, 1]
    assert [value(claude, n) for n in ("Throttled", "RateLimitWaitTime")] == [1, 1250]
    assert value(by_endpoint[NO_ENDPOINT], "RequestsFailed") == 1
    assert value(by_endpoint["default"], "TokensIn") == 900
    # ... the busy endpoint's latencies are a sample that keeps the slow tail
    latencies = by_endpoint["default"]["ModelLatency"]
    assert len(latencies) == MAX_LATENCY_VALUES
    assert max(latencies) == 5000.0 and min(latencies) == min(slow_tail)
    # ... and what belongs to no endpoint is the container's, without that dimension
    assert dimension_names(service_level) == [["service"]]
    assert [value(service_level, n) for n in ("DeadLettered", "ConcurrencyLimit")] == [2, 12]
    assert "RequestsSucceeded" not in service_level


def test_an_invocation_that_used_no_endpoint_publishes_only_the_container_metrics(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_invocation(metrics, InvocationStats(dead_lettered=4, concurrency_limit=8))

    assert printed_documents(capsys.readouterr().out) == []
    assert value(dict(metrics.serialize_metric_set()), "DeadLettered") == 4


def test_a_latency_sample_keeps_the_shape_of_all_latencies() -> None:
    few = [30, 10, 20]
    assert latency_sample(few) == few

    # 1..1000 shuffled: the value at rank r (from 0) of the sorted whole is r + 1
    many = list(range(1, 1001))
    random.Random(1).shuffle(many)
    size = 11
    sample = latency_sample(many, size=size)
    assert len(sample) == size and sample == sorted(sample)
    assert (sample[0], sample[-1]) == (1, 1000)
    # ... each one the whole's quantile i/(size-1), give or take one rank
    assert all(abs(v - (1 + i * 999 / (size - 1))) <= 1 for i, v in enumerate(sample))
