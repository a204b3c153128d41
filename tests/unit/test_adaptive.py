"""The adaptive concurrency limit (shared/limits/adaptive.py) against a model of an endpoint with a
fixed number of slots: no clock, no network; latencies are computed, not measured."""

from __future__ import annotations

import random

import pytest

from shared.limits.adaptive import BACKOFF, INITIAL_LIMIT, PROBE_EVERY, VegasLimit, queue_allowance


def queueing_latency(in_flight: int, *, slots: int, base_s: float) -> float:
    """An endpoint serving ``slots`` at once and queueing the rest, FIFO: with ``in_flight``
    calls kept going, each waits for ``in_flight / slots`` rounds of ``base_s``."""
    return base_s * max(1.0, in_flight / slots)


def drive(
    vegas: VegasLimit, calls: int, *, slots: int, base_s: float, rng: random.Random, jitter: float = 0.05
) -> list[int]:
    """Keep the limit full (a backlog of records) for ``calls`` calls; the limit after each."""
    history = []
    for _ in range(calls):
        in_flight = vegas.limit
        latency = queueing_latency(in_flight, slots=slots, base_s=base_s) * rng.uniform(1 - jitter, 1 + jitter)
        vegas.on_latency(generation=vegas.generation, latency_s=latency, in_flight=in_flight)
        history.append(vegas.limit)
    return history


@pytest.mark.parametrize("slots", [4, 16, 32, 100])
def test_the_limit_settles_just_above_the_endpoints_slots(slots: int) -> None:
    vegas = VegasLimit(max_limit=1000)
    history = drive(vegas, 60 * slots, slots=slots, base_s=0.2, rng=random.Random(slots))
    _, beta = queue_allowance(slots)
    settled = sorted(history[-20 * slots :])
    # At most beta (plus one step) calls wait at the endpoint, and it is not starved but
    # while it probes the baseline (one window in PROBE_EVERY, at half the limit).
    assert settled[len(settled) // 10] >= slots
    assert settled[-1] <= slots + beta + 2
    assert history[0] == INITIAL_LIMIT


def test_it_never_leaves_the_operators_bounds() -> None:
    vegas = VegasLimit(max_limit=10)
    history = drive(vegas, 2000, slots=64, base_s=0.1, rng=random.Random(1))
    assert max(history) == 10 and min(history) >= 1
    vegas.set_max(6)
    assert vegas.limit == 6


def test_a_429_or_timeout_backs_off_once_per_limit() -> None:
    vegas = VegasLimit(max_limit=100, initial=40)
    g = vegas.generation
    assert vegas.on_overload(generation=g)
    assert vegas.limit == int(40 * BACKOFF)
    # More overloads from calls started under the old limit are the same burst: ignored.
    assert not vegas.on_overload(generation=g)
    assert vegas.limit == int(40 * BACKOFF)
    assert vegas.on_overload(generation=vegas.generation)
    assert vegas.limit == int(int(40 * BACKOFF) * BACKOFF)
    assert not vegas.slow_start


def test_it_does_not_grow_when_the_invocation_not_the_endpoint_limits_the_calls() -> None:
    vegas = VegasLimit(max_limit=100, initial=16)
    for _ in range(200):  # only 3 calls at a time: the batch has no more to send
        vegas.on_latency(generation=vegas.generation, latency_s=0.2, in_flight=3)
    assert vegas.limit == 16


def test_a_lasting_rise_in_latency_is_taken_as_the_new_baseline_after_a_probe() -> None:
    # GIVEN a limit settled on 16 slots of 200 ms
    slots = 16
    vegas = VegasLimit(max_limit=1000)
    drive(vegas, 60 * slots, slots=slots, base_s=0.2, rng=random.Random(3))
    # WHEN every answer becomes 3 times slower for good (longer outputs), with no queue
    history = drive(vegas, (PROBE_EVERY + 20) * 2 * slots, slots=slots, base_s=0.6, rng=random.Random(4))
    # THEN after a probe the limit is back around the slots, not collapsed to a handful
    assert min(history[-5 * slots :]) >= slots
    assert vegas.baseline_s is not None and vegas.baseline_s > 0.5
