"""The console's job detail shows the lane, its reason and a batch-lane job's native progress."""

from __future__ import annotations

from shared.jobs import Counts, JobMeta, JobStatus
from tui.screens.job_detail import lane_line


def test_a_batch_lane_job_shows_its_lane_reason_and_native_progress() -> None:
    meta = JobMeta(
        "job-1",
        60,
        lane="batch",
        lane_reason="asked for (--lane batch)",
        native_parts=3,
        native_parts_running=1,
        native_parts_done=2,
        native_completed=1234,
        native_failed=2,
    )
    assert lane_line(JobStatus(meta, Counts())) == (
        "lane batch: asked for (--lane batch) · native 1,234 completed, 2 failed; parts 2 of 3 done, 1 running"
    )


def test_an_online_job_shows_why_it_runs_online() -> None:
    meta = JobMeta("job-2", 3, lane="online", lane_reason="auto: endpoint 'e' has no native batch API")
    assert lane_line(JobStatus(meta, Counts())) == "lane online: auto: endpoint 'e' has no native batch API"
