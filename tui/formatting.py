"""Small renderers shared by the screens (pure functions, tested without an app)."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from shared.jobs import JobState, JobStatus

STATE_STYLES: dict[JobState, str] = {
    JobState.SUBMITTING: "yellow",
    JobState.QUEUED: "cyan",
    JobState.IN_PROGRESS: "bold blue",
    JobState.COMPLETED: "green",
    JobState.CANCELLING: "magenta",
    JobState.CANCELLED: "dim",
}


def progress_bar(done: int, total: int, width: int = 12) -> Text:
    """``██████░░░░░░  50%`` as a table cell."""
    fraction = 1.0 if total <= 0 else min(1.0, done / total)
    filled = round(fraction * width)
    text = Text()
    text.append("█" * filled, style="green")
    text.append("░" * (width - filled), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


def state_text(job: JobStatus) -> Text:
    return Text(job.state.value, style=STATE_STYLES.get(job.state, ""))


def number(n: int | None) -> str:
    return "\N{EN DASH}" if n is None else f"{n:,}"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "unknown"
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
