"""What the console needs from a stack, and small adapters over ``LlmbatchClient``.

The console talks to any object with the async methods of
:class:`llmbatch.client.client.LlmbatchClient` (:class:`ConsoleClient`); the tests and the
screenshot script hand in an in-memory one. The console calls the client's public methods
only, never its AWS clients.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from llmbatch.client.client import ExportSummary, ProgressCallback, QueueStats
from llmbatch.client.estimate import JobEstimate
from llmbatch.client.jobfile import JobFile
from shared.config import RuntimeLimits
from shared.deadletter import DeadLetter
from shared.jobs import JobStatus
from shared.priority import DEFAULT_PRIORITY, Priority
from shared.results import RequestResult


class ConsoleClient(Protocol):
    """The part of ``LlmbatchClient`` the console uses."""

    async def list_jobs(self, limit: int = 100) -> list[JobStatus]: ...
    async def status(self, job_id: str) -> JobStatus: ...
    async def results(self, job_id: str, limit: int | None = None) -> list[RequestResult]: ...
    async def export_results(self, job_id: str, out: Path, errors: Path | None = None) -> ExportSummary: ...
    async def queue_stats(self) -> QueueStats: ...
    async def oldest_message_age_s(self) -> float | None: ...
    async def get_limits(self) -> RuntimeLimits: ...
    async def set_limits(self, limits: RuntimeLimits) -> None: ...
    async def get_worker_concurrency(self) -> int | None: ...
    async def set_worker_concurrency(self, value: int) -> None: ...
    async def limits_changed_at(self) -> datetime | None: ...
    async def worker_concurrency_changed_at(self) -> datetime | None: ...
    async def check_file(self, path: Path, *, endpoint: str = "default") -> JobFile: ...
    async def estimate(self, path: Path, *, endpoint: str = "default") -> JobEstimate: ...
    async def dead_letters(self, job_id: str | None = None) -> list[DeadLetter]: ...
    async def redrive(self, job_id: str | None = None) -> int: ...
    async def submit(
        self,
        path: Path,
        *,
        name: str | None = None,
        endpoint: str = "default",
        on_progress: ProgressCallback | None = None,
        priority: Priority | str = DEFAULT_PRIORITY,
    ) -> str: ...


#: Called with no arguments; gives an async context manager that yields the client.
ClientFactory = Callable[[], AbstractAsyncContextManager[Any]]


def supports(client: object, method: str) -> bool:
    """Whether the client offers an optional action (``cancel``, ``retry_failed``); the
    in-memory demo stack offers neither."""
    return callable(getattr(client, method, None))
