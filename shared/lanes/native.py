"""What every native batch API looks like to llmbatch (the ``batch`` lane).

A job on the batch lane runs on its endpoint's own batch API instead of online calls:
Amazon Bedrock's batch inference (CreateModelInvocationJob) for a ``bedrock`` endpoint,
the OpenAI Batch API (``/v1/files`` + ``/v1/batches``) for an ``openai`` endpoint that
offers it. ``submit`` stages the job's records in the payload bucket in parts of at most
:attr:`NativeLimits.max_records` (``batch/{job_id}/part-{NNNNN}.jsonl``, one
:class:`NativeRecord` per line); the scheduled lane poller (``functions/lanes``) starts a
native job per part when the API's quota allows, follows its progress, imports its
outcomes into the results table through the same exactly-once writes as online results,
and stops it on cancel. Each API is one class implementing :class:`NativeBatchApi`; the
poller knows nothing else about it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from shared.errors import TransientError
from shared.results import Usage


class NativeState(StrEnum):
    """Where a native job is, in llmbatch's words (each API maps its own states here)."""

    #: Accepted, not yet running (validating, scheduled, queued).
    PENDING = "pending"
    RUNNING = "running"
    #: Ended with outcomes to import (every record, or some of them: partial completion).
    ENDED = "ended"
    #: Ended without outcomes (the whole native job failed, expired or was refused).
    FAILED = "failed"
    #: Stopped on request; outcomes of records finished before the stop may still exist.
    STOPPED = "stopped"


TERMINAL_STATES = frozenset({NativeState.ENDED, NativeState.FAILED, NativeState.STOPPED})


@dataclass(frozen=True)
class NativeLimits:
    """An API's rules for one endpoint (quotas are adjustable, so they come from settings)."""

    #: The API refuses a native job with fewer records (Bedrock's minimum records per job).
    min_records: int
    #: Most records one native job may hold; bigger jobs are split into parts.
    max_records: int
    #: Most native jobs running at once for this endpoint/model; ``None`` for no limit.
    max_concurrent_jobs: int | None
    #: How long the API may take to finish a job (both APIs promise 24 hours).
    completion_window_s: int = 24 * 3600


@dataclass(frozen=True)
class NativeRecord:
    """One request of a part: a line of the staged input."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class NativePart:
    """One native job's worth of a job's records."""

    job_id: str
    endpoint: str
    #: 0-based part number.
    part: int
    #: Key of the staged input in the payload bucket.
    input_key: str
    records: int


@dataclass(frozen=True)
class NativeProgress:
    state: NativeState
    total: int = 0
    completed: int = 0
    failed: int = 0
    #: The API's own words when the whole native job failed or was refused.
    message: str = ""


@dataclass(frozen=True)
class NativeOutcome:
    """How one record ended in a native job, mapped back to its ``custom_id``."""

    line: int
    custom_id: str
    #: The answer in the OpenAI response shape (``choices``/``data``, ``usage``) on success.
    body: dict[str, Any] | None = None
    status_code: int | None = None
    #: Set on failure: the API's error code and message for this record.
    error_code: str | None = None
    error_message: str | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def succeeded(self) -> bool:
        return self.error_code is None and self.body is not None


class NativeQuotaExceededError(TransientError):
    """The API's quota on running jobs is full: start this part on a later run."""


class NativeBatchApi(Protocol):
    """One native batch API for one endpoint."""

    @property
    def limits(self) -> NativeLimits: ...

    async def start(self, part: NativePart, records: Sequence[NativeRecord]) -> str:
        """Create the native job for ``part`` and return its id (Bedrock: the job ARN;
        OpenAI: the batch id). Raises :class:`NativeQuotaExceededError` when the quota
        on running jobs is full, another :class:`TransientError` when worth trying again,
        a :class:`shared.errors.PermanentError` when the API refuses this part for good."""
        ...

    async def progress(self, native_id: str) -> NativeProgress: ...

    def outcomes(self, native_id: str, records: Sequence[NativeRecord]) -> AsyncIterator[NativeOutcome]:
        """Every record's outcome once the native job has ended or stopped; a record the
        API reports nothing for is an outcome with ``error_code`` ``native_missing``."""
        ...

    async def cancel(self, native_id: str) -> None: ...
