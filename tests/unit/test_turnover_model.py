"""The queueing model the workers' HEADROOM is chosen from (llmbatch/bench/turnover_model.py):
its clock checked on cases worked by hand, then the choice it supports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmbatch.bench.turnover_model import LAMBDA, LOCAL, Timing, Workload, last_result_s, sized, utilisation
from llmbatch.client.worker_sizing import HEADROOM

#: No jitter, every batch at once at the start.
AT_ONCE = Timing(turnover_s=0.0, first_s=0.0, stagger_s=0.0)


def exact(requests: int, invocations: int, batch_size: int, timing: Timing = AT_ONCE) -> Workload:
    w = Workload(requests=requests, invocations=invocations, batch_size=batch_size, calls=16, slots=32, jitter_s=0.0)
    return w.timed(timing)


def test_one_invocation_under_the_endpoints_slots_runs_its_batch_in_waves() -> None:
    # 32 requests, 16 at a time, nothing queued at the endpoint: two waves of 0.2 s
    assert last_result_s(exact(32, 1, 32)) == pytest.approx(0.4)


def test_calls_beyond_the_endpoints_slots_wait_in_its_queue() -> None:
    # 4 x 16 calls at once on 32 slots: the second 32 wait for the first
    assert last_result_s(exact(64, 4, 16)) == pytest.approx(0.4)


def test_an_invocation_turns_over_between_its_batches() -> None:
    w = exact(32, 1, 16, Timing(turnover_s=0.1, first_s=0.0, stagger_s=0.0))
    assert last_result_s(w) == pytest.approx(0.2 + 0.1 + 0.2)


def test_the_first_batch_starts_when_the_first_messages_arrive() -> None:
    w = exact(16, 2, 16, Timing(turnover_s=0.0, first_s=0.3, stagger_s=0.0))
    assert last_result_s(w) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("timing", "requests", "gain"),
    [
        (LAMBDA, 2_000, 0.015),
        (LAMBDA, 20_000, 0.015),
        (LOCAL, 2_000, 0.01),
        # started one batch apart, the local invocations' turnovers rarely coincide: a job
        # this long fills the endpoint at either sizing, and the headroom gains it little
        (LOCAL, 20_000, 0.0),
    ],
    ids=["lambda-2000", "lambda-20000", "local-2000", "local-20000"],
)
def test_the_workers_headroom_keeps_the_endpoint_fuller_than_twice_its_slots(
    timing: Timing, requests: int, gain: float
) -> None:
    # the benchmark's endpoint (32 slots, 0.2 s calls), batches of 100 at 16 calls
    base = Workload(requests=requests).timed(timing)
    assert sized(base, HEADROOM).invocations == 5
    assert utilisation(sized(base, HEADROOM)) > utilisation(sized(base, 2.0)) + gain


def test_invocations_started_together_leave_the_endpoint_idle_at_their_turnovers() -> None:
    # the local stack's turnovers; its invocations starting at once, or one batch apart
    together = sized(Workload(requests=20_000).timed(replace(LOCAL, stagger_s=0.0)), HEADROOM)
    apart = replace(together, stagger_s=LOCAL.stagger_s)
    assert utilisation(apart) > utilisation(together) + 0.03
