"""The local stand-in for a function's schedule (EventBridge Scheduler's ``ScheduleV2`` or a
rule's ``Schedule`` event in the template): the function is invoked in a container of its
own, as the scheduler would, every ``interval_s``.

The template's rate (minutes, for AWS) is far too slow for a local run or a test, so the
local period is a setting: :data:`DEFAULT_INTERVAL_S`, or ``LLMBATCH_LOCAL_SCHEDULE_S`` in
the environment, or ``LocalStack(schedule_interval_s=...)``. One invocation at a time: the
next starts ``interval_s`` after the last ended (in AWS runs may overlap; the functions
scheduled here are written to be safe either way).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmbatch.local.lambda_runtime import ContainerProcess
from llmbatch.local.provision import ACCOUNT_ID, REGION, LocalFunction, Schedule

log = logging.getLogger("llmbatch.local.schedule")

DEFAULT_INTERVAL_S = 1.0
INTERVAL_ENV = "LLMBATCH_LOCAL_SCHEDULE_S"


def local_interval_s(override: float | None = None) -> float:
    if override is not None:
        return override
    return float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))


def scheduled_event(function: LocalFunction, schedule: Schedule) -> dict[str, Any]:
    """What EventBridge Scheduler hands the function (its default input)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/default/{function.name}-{schedule.event_id}"],
        "detail": {},
    }


class ScheduleEmulator:
    def __init__(
        self,
        function: LocalFunction,
        schedule: Schedule,
        aws_endpoint_url: str,
        *,
        interval_s: float | None = None,
        container_env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.function = function
        self.schedule = schedule
        self.endpoint = aws_endpoint_url
        self.interval_s = local_interval_s(interval_s)
        self._env = container_env or {}
        self._log_path = (log_dir / f"{function.logical_id}.log") if log_dir else None
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: ContainerProcess | None = None
        self.invocations = 0
        self.errors = 0

    def start(self) -> None:
        ContainerProcess.prepare()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"schedule-{self.function.logical_id}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.function.timeout_s + 5)
        if self._container is not None:
            self._container.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.invoke_once()
            except Exception:  # the scheduler keeps its schedule whatever one run did
                log.exception("scheduled invocation of %s", self.function.logical_id)

    def invoke_once(self) -> tuple[str, dict[str, Any]]:
        if self._container is None or not self._container.alive:
            self._container = ContainerProcess(self.function, self.endpoint, self._env, self._log_path)
        started = time.monotonic()
        kind, payload = self._container.invoke(
            scheduled_event(self.function, self.schedule), timeout_s=self.function.timeout_s + 1.0
        )
        self.invocations += 1
        if kind != "ok":
            self.errors += 1
            log.warning("%s: %s after %.1f s: %s", self.function.logical_id, kind, time.monotonic() - started, payload)
        return kind, payload
