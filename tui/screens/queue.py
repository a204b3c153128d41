"""The request queue and its dead letters, with recent history and the processing rate."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import Footer, Header, Static

from llmbatch.client.client import QueueStats
from tui.rates import DASH, duration
from tui.screens.base import PollingScreen
from tui.widgets.stat_spark import StatSpark


@dataclass(frozen=True)
class Sample:
    at: datetime
    stats: QueueStats
    #: Requests in a terminal state, summed over every job.
    terminal: int
    #: Age of the oldest message in the request queues, any priority (CloudWatch); None when unknown.
    oldest_age_s: float | None = None


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
        #: The last poll of the oldest message's age failed (reported once per streak).
        self.oldest_failed = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="queue-grid"):
            yield StatSpark("Visible (waiting)", id="stat-visible")
            yield StatSpark("In flight", id="stat-in-flight")
            yield StatSpark("Delayed (retry backoff)", id="stat-delayed")
            yield StatSpark("Dead letters", id="stat-dead-letters", classes="danger")
            yield StatSpark("Oldest message (age)", id="stat-oldest")
            yield StatSpark("Processing rate", unit="req/s", id="stat-rate")
        yield Static("Loading…", id="queue-status", classes="status-line")
        yield Footer()

    async def fetch(self) -> None:
        stats, jobs, oldest = await asyncio.gather(
            self.client.queue_stats(), self.client.list_jobs(), self.oldest_age()
        )
        self.add_sample(Sample(self.console_app.clock(), stats, sum(j.counts.terminal for j in jobs), oldest))

    async def oldest_age(self) -> float | None:
        """The oldest message's age, or None when the client lacks it or it fails (a failure
        is reported once, and never stops the other figures)."""
        read = getattr(self.client, "oldest_message_age_s", None)
        if not callable(read):
            return None
        try:
            age: float | None = await read()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not self.oldest_failed:
                self.report(e)
            self.oldest_failed = True
            return None
        self.oldest_failed = False
        return age

    def add_sample(self, sample: Sample) -> None:
        s = sample.stats
        self.query_one("#stat-visible", StatSpark).push(s.visible)
        self.query_one("#stat-in-flight", StatSpark).push(s.in_flight)
        self.query_one("#stat-delayed", StatSpark).push(s.delayed)
        self.query_one("#stat-dead-letters", StatSpark).push(s.dead_letters)
        oldest = self.query_one("#stat-oldest", StatSpark)
        if sample.oldest_age_s is None:
            oldest.show("unavailable" if self.oldest_failed else DASH)
        else:
            oldest.push(sample.oldest_age_s, text=duration(sample.oldest_age_s))
        rate = rate_per_s(self.last, sample)
        if rate is not None:
            self.query_one("#stat-rate", StatSpark).push(rate, text=f"{rate:,.1f}")
        self.last = sample
        self.query_one("#queue-status", Static).update(
            f"{sample.terminal:,} request(s) finished in all jobs · updated {sample.at.strftime('%H:%M:%S')}"
        )

    def action_refresh(self) -> None:
        self.poll_now()
