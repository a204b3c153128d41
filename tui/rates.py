"""Per-job processing rate and ETA from consecutive polls (pure, tested without an app)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.jobs import JobStatus

#: Weight of the newest interval in the smoothed rate (about the last three polls count).
EWMA_ALPHA = 0.5

DASH = "\N{EM DASH}"


def ewma(previous: float | None, value: float, alpha: float = EWMA_ALPHA) -> float:
    """The exponentially weighted moving average after one more value."""
    return value if previous is None else alpha * value + (1 - alpha) * previous


@dataclass(frozen=True)
class Observation:
    at: datetime
    terminal: int
    #: Smoothed requests per second; None until two polls are apart in time.
    rate: float | None = None


class RateTracker:
    """Keeps the last observation of every job and smooths its rate across polls."""

    def __init__(self, alpha: float = EWMA_ALPHA) -> None:
        self.alpha = alpha
        self.seen: dict[str, Observation] = {}

    def observe(self, job_id: str, terminal: int, at: datetime) -> float | None:
        """Record a poll of one job; returns its smoothed rate in requests per second."""
        last = self.seen.get(job_id)
        if last is None:
            self.seen[job_id] = Observation(at, terminal)
            return None
        seconds = (at - last.at).total_seconds()
        if seconds <= 0:  # the same instant (or a clock going back): keep what we had
            return last.rate
        instant = max(0, terminal - last.terminal) / seconds
        rate = ewma(last.rate, instant, self.alpha)
        self.seen[job_id] = Observation(at, terminal, rate)
        return rate

    def forget_except(self, job_ids: set[str]) -> None:
        self.seen = {k: v for k, v in self.seen.items() if k in job_ids}


def eta_seconds(pending: int, rate: float | None) -> float | None:
    """Seconds until ``pending`` requests finish at ``rate``; None when unknown or stalled."""
    if pending <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return pending / rate


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2d04h``: at most six characters."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    days = s // 86400
    return f"{days}d{s % 86400 // 3600:02d}h" if days < 100 else ">99d"


def rate_text(job: JobStatus, rate: float | None) -> str:
    if job.finished or rate is None:
        return DASH
    return f"{rate:,.1f}" if rate < 1000 else f"{rate:,.0f}"


def eta_text(job: JobStatus, rate: float | None) -> str:
    if job.finished:
        return "done"
    eta = eta_seconds(job.pending, rate)
    return DASH if eta is None or job.pending <= 0 else duration(eta)
