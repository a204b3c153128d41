"""The fault drill at a size that fits CI (the README's `llmbatch drill` runs 2,000)."""

from __future__ import annotations

from llmbatch.local.drill import run_drill


def test_under_every_fault_at_once_each_request_is_answered_exactly_once() -> None:
    # GIVEN/WHEN 300 requests with 429s, 5xx, hangs, duplicate deliveries, malformed
    # messages and a worker container killed mid-batch
    report = run_drill(300, seed=2, timeout_s=300)

    # THEN the drill found nothing wrong, and the faults really happened
    assert report.problems == []
    assert report.faults_sent > 0 and report.duplicates_sent > 0 and report.killed_containers == 1
    assert report.status["succeeded"] + report.status["failed"] == 300
    assert report.endpoint_calls > 300
