"""The job record and how a job's status is derived from its counters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from shared.latency import RESOLUTION as LATENCY_RESOLUTION
from shared.latency import JobTiming
from shared.messages import sign
from shared.results import utc_now_iso


def _rounded(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


class JobState(StrEnum):
    SUBMITTING = "submitting"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


def new_job_id(now: datetime | None = None) -> str:
    """Sortable by creation time, newest last: ``job-20261129T061500Z-3f9a1c2e``."""
    now = now or datetime.now(UTC)
    return f"job-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Counts:
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.cancelled + other.cancelled,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    @property
    def terminal(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True)
class Metering:
    """What a job used of the stack, summed from its counter shards like :class:`Counts`:
    the inputs of its cost estimate (:mod:`llmbatch.client.cost`)."""

    #: Worker invocation time spent on the job (ms): each invocation's duration, split
    #: across the jobs of its batch by their share of its records.
    compute_ms: int = 0
    #: Worker invocations that handled at least one of the job's messages.
    invocations: int = 0
    #: The job's messages the worker received (a request tried three times counts three),
    #: and their total size.
    deliveries: int = 0
    delivered_bytes: int = 0
    #: Deliveries whose body the worker read from the payload bucket (the claim check).
    claim_checks: int = 0
    #: DynamoDB write request units of the job's result transactions.
    write_units: int = 0
    #: Answers too big for an item, put in the payload bucket.
    offloaded: int = 0

    def __add__(self, other: Metering) -> Metering:
        return Metering(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class JobMeta:
    job_id: str
    total: int
    name: str = ""
    endpoint: str = "default"
    #: To the millisecond: ``list_jobs`` orders by it, and two jobs made in one second (a
    #: script's, or a resumed submit's neighbour) must still list newest first. A record made
    #: when it held whole seconds sorts before any made later in its second ('+' < '.').
    created_at: str = field(default_factory=utc_now_iso)
    #: Every request of the job has been enqueued.
    sealed: bool = False
    enqueued: int = 0
    cancel_requested: bool = False
    #: The job's signing key (``shared.messages.sign``): a message is the job's only if its
    #: ``sig`` verifies with it. Empty for jobs made before jobs had one (they take any
    #: message). A secret: never shown, logged or put in ``to_dict``.
    sign_key: str = field(default="", repr=False)
    #: An HTTPS URL to POST the job's "Job Finished" event to (``submit --notify``), signed
    #: (shared/notify.py); empty for none.
    notify_url: str = ""
    #: The job's "Job Finished" event: ``pending`` while claimed, ``sent`` once published
    #: (shared/finish.py); empty before the job finished.
    finished_event: str = ""
    #: ``high``, ``normal`` or ``low`` (shared/priority.py): the queue its requests go to,
    #: on submit, resume, retry and redrive alike. Jobs made before priorities are normal.
    priority: str = "normal"
    #: The lane the job runs on (``online`` or ``batch``, see shared/lanes) and why it was
    #: chosen (``submit --lane``); empty for jobs submitted without ``--lane`` (online).
    lane: str = ""
    lane_reason: str = ""
    #: A batch-lane job's native progress, summed over its parts by the lane poller.
    native_parts: int = 0
    native_parts_running: int = 0
    native_parts_done: int = 0
    native_completed: int = 0
    native_failed: int = 0


class NewJob(NamedTuple):
    """A job just created for a program that enqueues its own messages: its id, and the
    key that signs them (``sign``). Unpacks as ``job_id, sign_key``; never shows the key."""

    job_id: str
    sign_key: str

    def __repr__(self) -> str:
        return f"NewJob(job_id={self.job_id!r})"

    def sign(self, custom_id: str, line: int) -> str:
        """The ``sig`` of the job's request ``custom_id`` at ``line``."""
        return sign(self.sign_key, self.job_id, custom_id, line)


@dataclass(frozen=True)
class JobStatus:
    meta: JobMeta
    counts: Counts
    metering: Metering = field(default_factory=Metering)
    #: Latency histogram and first start / last result, from the counter shards.
    timing: JobTiming = field(default_factory=JobTiming)

    @property
    def job_id(self) -> str:
        return self.meta.job_id

    @property
    def total(self) -> int:
        return self.meta.total

    @property
    def pending(self) -> int:
        return max(0, self.meta.total - self.counts.terminal)

    @property
    def state(self) -> JobState:
        """Derived, never stored: counters and flags are the only truth."""
        done = self.counts.terminal >= self.meta.total
        if self.meta.cancel_requested:
            return JobState.CANCELLED if done or not self.meta.sealed else JobState.CANCELLING
        if not self.meta.sealed:
            return JobState.SUBMITTING
        if done:
            return JobState.COMPLETED
        # A batch-lane job is in progress once its native jobs report any record done.
        started = self.counts.terminal > 0 or self.meta.native_completed + self.meta.native_failed > 0
        return JobState.IN_PROGRESS if started else JobState.QUEUED

    @property
    def finished(self) -> bool:
        return self.state in (JobState.COMPLETED, JobState.CANCELLED)

    @property
    def error_rate(self) -> float | None:
        """Failed over terminal requests; None before any."""
        return self.counts.failed / self.counts.terminal if self.counts.terminal else None

    @property
    def requests_per_s(self) -> float | None:
        """Terminal requests over the time from the first call's start to the last result;
        None on the batch lane (its results are imported in bursts: no calls to time)."""
        if self.meta.lane == "batch":
            return None
        active = self.timing.active_s
        return self.counts.terminal / active if active and self.counts.terminal else None

    def figures(self) -> dict[str, float | None]:
        """What operators look for: latency of the answered requests (mean, p50, p99, in ms;
        the percentiles within ``latency_resolution``), error rate and requests/s; None
        where there is nothing to read yet."""
        t = self.timing
        return {
            "latency_mean_ms": _rounded(t.mean_ms),
            "latency_p50_ms": _rounded(t.percentile_ms(50)),
            "latency_p99_ms": _rounded(t.percentile_ms(99)),
            "latency_resolution": round(LATENCY_RESOLUTION, 3),
            "answered": t.answered,
            "error_rate": None if self.error_rate is None else round(self.error_rate, 4),
            "requests_per_s": _rounded(self.requests_per_s, 2),
            "active_s": _rounded(t.active_s, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.meta.name,
            "status": self.state.value,
            "total": self.total,
            "succeeded": self.counts.succeeded,
            "failed": self.counts.failed,
            "cancelled": self.counts.cancelled,
            "pending": self.pending,
            "enqueued": self.meta.enqueued,
            "prompt_tokens": self.counts.prompt_tokens,
            "completion_tokens": self.counts.completion_tokens,
            "endpoint": self.meta.endpoint,
            "priority": self.meta.priority,
            "created_at": self.meta.created_at,
            **self.lane_dict(),
        }

    def lane_dict(self) -> dict[str, Any]:
        """The lane, its reason and a batch-lane job's native progress; nothing for a job
        submitted without ``--lane``."""
        m = self.meta
        if not m.lane:
            return {}
        d: dict[str, Any] = {"lane": m.lane, "lane_reason": m.lane_reason}
        if m.lane == "batch":
            d["native"] = {
                "parts": m.native_parts,
                "parts_running": m.native_parts_running,
                "parts_done": m.native_parts_done,
                "completed": m.native_completed,
                "failed": m.native_failed,
            }
        return d
