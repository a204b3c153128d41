"""The backlog drill at a size that fits CI (`llmbatch drill --scenario backlog` runs 1,200)."""

from __future__ import annotations

from llmbatch.local.drill_backlog import run_backlog


def test_a_backlog_behind_a_binding_rate_limit_is_called_once_and_never_dead_lettered() -> None:
    # GIVEN 400 requests, up to 400 pulled at once by the workers, a limit serving 10 a
    # second, and a queue that dead-letters a message on its third receive
    report = run_backlog(400, rpm=600, timeout_s=300)

    # THEN every request was called once and succeeded, though records were received more
    # often than maxReceiveCount allows (the drill checks that it really happened)
    assert report.problems == [], "\n".join(report.lines())
    assert report.records_delivered > report.requests * report.max_attempts
    assert report.status["succeeded"] == 400
