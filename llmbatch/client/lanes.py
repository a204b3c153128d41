"""Which lane a job runs on: ``online`` (SQS and the workers, today's path) or ``batch`` (the
endpoint's native batch API, at its discount, within its completion window).

:func:`choose_lane` is pure: ``submit`` gives it the file's size, the endpoint's native
limits (:func:`shared.lanes.registry.native_limits`) and ``--within``, and prints and
stores what it answers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from shared.errors import ConfigError
from shared.lanes.native import NativeLimits

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Lane(StrEnum):
    ONLINE = "online"
    BATCH = "batch"
    AUTO = "auto"


class LaneRefusedError(ConfigError):
    """``--lane batch`` where the native batch API cannot take the job (nothing enqueued)."""


@dataclass(frozen=True)
class LaneChoice:
    lane: Lane
    reason: str
    #: The native API's limits, for a batch-lane job.
    limits: NativeLimits | None = None

    def parts(self, records: int) -> int:
        return math.ceil(records / self.limits.max_records) if self.limits else 0

    def line(self) -> str:
        return f"lane {self.lane.value}: {self.reason}"


def parse_duration(text: str) -> float:
    """``90s``, ``45m``, ``2h``, ``1d``, ``1h30m`` (or plain seconds) in seconds."""
    raw = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    pieces = _DURATION.findall(raw)
    if not pieces or _DURATION.sub("", raw).strip():
        raise ConfigError(f"cannot read the duration {text!r}: use e.g. 90s, 45m, 2h, 1d or 1h30m")
    return sum(float(n) * _UNIT_S[unit] for n, unit in pieces)


def format_duration(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def choose_lane(
    requested: Lane | str,
    *,
    records: int,
    endpoint: str,
    limits: NativeLimits | None,
    within_s: float | None = None,
) -> LaneChoice:
    """The lane for a job of ``records`` on ``endpoint``.

    ``auto`` runs online below the native API's minimum, on an endpoint without one, or
    when ``within_s`` is shorter than its completion window; else on the batch lane.

    Raises
    ------
    LaneRefusedError
        ``batch`` on an endpoint without a native batch API, or below its minimum.
    """
    lane = Lane(requested)
    if lane is Lane.ONLINE:
        return LaneChoice(Lane.ONLINE, "asked for (--lane online)")
    if limits is None:
        why = f"endpoint {endpoint!r} has no native batch API"
        if lane is Lane.BATCH:
            raise LaneRefusedError(f"--lane batch refused: {why} (use --lane online or auto)")
        return LaneChoice(Lane.ONLINE, f"auto: {why}")
    if records < limits.min_records:
        why = f"{records:,} record(s), below the batch API's minimum of {limits.min_records:,} per job"
        if lane is Lane.BATCH:
            raise LaneRefusedError(f"--lane batch refused: {why} (use --lane online or auto)")
        return LaneChoice(Lane.ONLINE, f"auto: {why}")
    window = format_duration(limits.completion_window_s)
    if lane is Lane.AUTO and within_s is not None and within_s < limits.completion_window_s:
        return LaneChoice(
            Lane.ONLINE,
            f"auto: --within {format_duration(within_s)} is shorter than the batch API's {window} completion window",
        )
    parts = math.ceil(records / limits.max_records)
    size = f"{records:,} record(s) in {parts} native job(s) of at most {limits.max_records:,}, done within {window}"
    if lane is Lane.BATCH:
        return LaneChoice(Lane.BATCH, f"asked for (--lane batch): {size}", limits)
    deadline = "no --within given" if within_s is None else f"--within {format_duration(within_s)} allows it"
    return LaneChoice(Lane.BATCH, f"auto: {deadline}; {size}", limits)
