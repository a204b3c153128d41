"""The request queue and its dead letters, with recent history and the processing rate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import Footer, Header, Static

from shared.control import QueueStats
from tui.screens.base import PollingScreen
from tui.widgets.stat_spark import StatSpark


@dataclass(frozen=True)
class Sample:
    at: datetime
    stats: QueueStats
    #: Requests in a terminal state, summed over every job.
    terminal: int


def rate_per_s(previous: Sample | None, current: Sample) -> float | None:
    """Requests finished per second between two samples (None without an interval)."""
    if previous is None:
        return None
    seconds = (current.at - previous.at).total_seconds()
    if seconds <= 0:
        return None
    return max(0, current.terminal - previous.terminal) / seconds


class QueueScreen(PollingScreen):
    TITLE = "Queue"
    BINDINGS = [Binding("r", "refresh", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.last: Sample | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="queue-grid"):
            yield StatSpark("Visible (waiting)", id="stat-visible")
            yield StatSpark("In flight", id="stat-in-flight")
            yield StatSpark("Delayed (retry backoff)", id="stat-delayed")
            yield StatSpark("Dead letters", id="stat-dead-letters", classes="danger")
            yield StatSpark("Processing rate", unit="req/s", id="stat-rate", classes="wide")
        yield Static("Loading…", id="queue-status", classes="status-line")
        yield Footer()

    async def fetch(self) -> None:
        stats = await self.client.queue_stats()
        jobs = await self.client.list_jobs()
        self.add_sample(Sample(self.console_app.clock(), stats, sum(j.counts.terminal for j in jobs)))

    def add_sample(self, sample: Sample) -> None:
        s = sample.stats
        self.query_one("#stat-visible", StatSpark).push(s.visible)
        self.query_one("#stat-in-flight", StatSpark).push(s.in_flight)
        self.query_one("#stat-delayed", StatSpark).push(s.delayed)
        self.query_one("#stat-dead-letters", StatSpark).push(s.dead_letters)
        rate = rate_per_s(self.last, sample)
        if rate is not None:
            self.query_one("#stat-rate", StatSpark).push(rate, text=f"{rate:,.1f}")
        self.last = sample
        self.query_one("#queue-status", Static).update(
            f"{sample.terminal:,} request(s) finished in all jobs · updated {sample.at.strftime('%H:%M:%S')}"
        )

    def action_refresh(self) -> None:
        self.poll_now()
