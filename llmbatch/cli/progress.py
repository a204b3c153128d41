"""Progress the CLI shows while it waits: rich's live bars on a terminal that can redraw;
elsewhere (a pipe, a log, a test, ``TERM=dumb``) plain lines, one each time the count moves,
so the output stays parseable."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from llmbatch.client.client import ProgressCallback
from shared.jobs import JobStatus

#: Width of the plain line's bar.
PLAIN_BAR = 30


def progress_line(status: JobStatus, elapsed_s: float) -> str:
    """The plain form: ``[#####.....] 12/40  ok 11  failed 1  pending 28  3s  running``."""
    done = status.counts.terminal
    filled = int(PLAIN_BAR * done / status.total) if status.total else PLAIN_BAR
    bar = "#" * filled + "." * (PLAIN_BAR - filled)
    return (
        f"[{bar}] {done}/{status.total}  ok {status.counts.succeeded}  failed {status.counts.failed}"
        f"  pending {status.pending}  {elapsed_s:.0f}s  {status.state.value}"
    )


class JobProgress:
    """One job's progress on ``out`` (stderr by default: stdout stays for results)."""

    def __init__(self, job_id: str, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.console = Console(file=self.out)
        self._last = ""
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if self.console.is_interactive:
            # No job id column: the line before names the job, and 80 columns must hold the rest.
            self._bar = Progress(
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("ok {task.fields[ok]}  failed {task.fields[failed]}  pending {task.fields[pending]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[state]}"),
                console=self.console,
            )
            self._task = self._bar.add_task(job_id, total=None, ok=0, failed=0, pending=0, state="")

    def __enter__(self) -> JobProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, status: JobStatus, elapsed_s: float) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                total=status.total,
                completed=status.counts.terminal,
                ok=status.counts.succeeded,
                failed=status.counts.failed,
                pending=status.pending,
                state=status.state.value,
            )
            return
        line = progress_line(status, elapsed_s)
        moved = line.split("  ")[0]
        if moved != self._last:
            self.out.write(line + "\n")
            self.out.flush()
        self._last = moved


@contextmanager
def sending_progress(label: str, out: TextIO | None = None) -> Iterator[ProgressCallback | None]:
    """A callback drawing requests sent against the total on a terminal; None elsewhere,
    where a submit prints only its job id."""
    console = Console(file=out or sys.stderr)
    if not console.is_interactive:
        yield None
        return
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda sent, total: bar.update(task, completed=sent, total=total)
