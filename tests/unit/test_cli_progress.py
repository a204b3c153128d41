"""The CLI's progress (llmbatch/cli/progress.py): rich's bar on a terminal, and plain lines,
one per change of the count, anywhere else, so a pipe or a log stays parseable."""

from __future__ import annotations

import io
from typing import Any

import pytest

from llmbatch.cli.commands import wait_for
from llmbatch.cli.progress import JobProgress, progress_line, sending_progress
from shared.jobs import Counts, JobMeta, JobStatus


def job(succeeded: int, failed: int = 0, total: int = 4) -> JobStatus:
    return JobStatus(JobMeta(job_id="job-x", total=total, sealed=True, enqueued=total), Counts(succeeded, failed))


class ScriptedClient:
    """Answers ``status`` with the statuses given, one per poll, the last one forever."""

    def __init__(self, *statuses: JobStatus) -> None:
        self.statuses = list(statuses)

    async def status(self, job_id: str) -> JobStatus:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """A terminal that can redraw in place, whatever the environment the tests run in says."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    return Terminal()


async def test_waiting_into_a_pipe_writes_a_plain_line_each_time_the_count_moves() -> None:
    # GIVEN a job polled four times, its count unchanged at the second poll
    client: Any = ScriptedClient(job(1), job(1), job(2), job(3, 1))
    out = io.StringIO()

    # WHEN it is waited for with a pipe as the output
    final = await wait_for(client, "job-x", timeout_s=10, out=out, interval_s=0)

    # THEN one plain line per count, no terminal codes, and the finished status returned
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        f"[{'#' * 7}{'.' * 23}] 1/4",
        f"[{'#' * 15}{'.' * 15}] 2/4",
        f"[{'#' * 30}] 4/4",
    ]
    assert lines[-1].startswith(f"[{'#' * 30}] 4/4  ok 3  failed 1  pending 0")
    assert lines[-1].endswith("completed")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert final.finished


def test_the_plain_line_names_every_count_and_the_state() -> None:
    assert progress_line(job(2, 1), 7.4) == f"[{'#' * 22}{'.' * 8}] 3/4  ok 2  failed 1  pending 1  7s  in_progress"


def test_on_a_terminal_the_progress_is_rich_bar_and_not_the_plain_line(terminal: Terminal) -> None:
    # GIVEN a terminal
    out = terminal

    # WHEN a job's progress is drawn there
    with JobProgress("job-x", out) as progress:
        progress.update(job(2), 1.0)

    # THEN it is rich's bar, with the counts beside it, not the plain line
    text = out.getvalue()
    assert "\N{BOX DRAWINGS HEAVY HORIZONTAL}" in text
    assert "2/4" in text and "ok 2" in text
    assert "#" * 15 not in text


def test_submit_draws_its_progress_only_on_a_terminal(terminal: Terminal) -> None:
    # GIVEN / WHEN the progress of a submit into a pipe, then on a terminal
    with sending_progress("enqueueing", io.StringIO()) as on_pipe:
        pass
    out = terminal
    with sending_progress("enqueueing", out) as on_terminal:
        assert on_terminal is not None
        on_terminal(50, 100)

    # THEN nothing is drawn into the pipe (stdout keeps only the job id), a bar on the terminal
    assert on_pipe is None
    assert "enqueueing" in out.getvalue()


async def test_waiting_past_the_timeout_raises_timeout_error() -> None:
    # GIVEN a job that never moves / WHEN it is waited for / THEN the wait ends with TimeoutError
    client: Any = ScriptedClient(job(1))
    with pytest.raises(TimeoutError, match="not finished"):
        await wait_for(client, "job-x", timeout_s=0.0, out=io.StringIO(), interval_s=0)
