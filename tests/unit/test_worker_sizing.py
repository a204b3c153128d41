"""The worker's invocations sized to what its endpoints declare they serve at once
(llmbatch/client/worker_sizing.py): no I/O here."""

from __future__ import annotations

import json

import pytest

from llmbatch.client.worker_sizing import HEADROOM, workers_for
from shared.endpoints.specs import EndpointSpec, parse_endpoints
from shared.errors import ConfigError

BOUNDS = (2, 1000)


def endpoints(*capacities: int | None) -> dict[str, EndpointSpec]:
    specs = {
        f"e{i}": {"kind": "openai", "url": f"http://e{i}/v1", **({} if c is None else {"max_concurrency": c})}
        for i, c in enumerate(capacities)
    }
    return dict(parse_endpoints(json.dumps(specs)))


@pytest.mark.parametrize(
    ("capacities", "calls", "workers"),
    [
        ((32,), 16, 5),  # 80 calls out for 32 slots: the benchmark's endpoint
        ((32, 64), 16, 15),  # the endpoints' capacities add up
        ((100,), 16, 16),  # rounded up: never fewer calls than HEADROOM x capacity
        ((4,), 16, 2),  # at least the mapping's lowest, 2
        ((100_000,), 1, 1000),  # at most its highest
    ],
)
def test_workers_keep_about_headroom_times_the_endpoints_capacity_in_flight(
    capacities: tuple[int, ...], calls: int, workers: int
) -> None:
    sizing = workers_for(endpoints(*capacities), calls_per_invocation=calls, bounds=BOUNDS)
    assert sizing is not None
    assert (sizing.workers, sizing.capacity, sizing.calls_per_invocation) == (workers, sum(capacities), calls)
    if BOUNDS[0] < workers < BOUNDS[1]:
        # the fewest invocations whose calls cover HEADROOM x capacity
        assert (workers - 1) * calls < sum(capacities) * HEADROOM <= workers * calls


def test_an_endpoint_without_a_declared_capacity_leaves_the_workers_to_the_operator() -> None:
    # an API whose capacity is its rate limit (OpenAI, Bedrock) beside a sized server
    assert workers_for(endpoints(32, None), calls_per_invocation=16, bounds=BOUNDS) is None
    assert workers_for({}, calls_per_invocation=16, bounds=BOUNDS) is None


def test_a_declared_capacity_is_checked_like_any_endpoint_setting() -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        endpoints(0)
