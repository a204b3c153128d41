"""Fault markers: text such as ``[[sim:fail-first-2:503]]`` in a prompt targets faults at
that request, so integration tests are deterministic."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llmbatch.local.simulator.openai_api import _invalid

_MARKER_RE = re.compile(r"\[\[sim:([^\]]*)\]\]")
_FIVE_XX_CODES = (500, 502, 503)


# --------------------------------------------------------------------------------------------
# Markers: per-request fault targeting
# --------------------------------------------------------------------------------------------


@dataclass
class _Markers:
    status: int | None = None
    fail_first: tuple[int, int] | None = None  # (N, status)
    hang: bool = False
    sleep_s: float = 0.0


def _has_fail_first(text: str) -> bool:
    return any(m.group(1).strip().startswith("fail-first-") for m in _MARKER_RE.finditer(text))


def _parse_markers(texts: Sequence[str]) -> _Markers:
    """Read ``[[sim:...]]`` markers; an unknown marker is a 400 so typos can't pass silently."""
    markers = _Markers()
    for text in texts:
        for match in _MARKER_RE.finditer(text):
            spec = match.group(1).strip()
            if spec == "hang":
                markers.hang = True
            elif spec.startswith("sleep="):
                try:
                    seconds = float(spec.removeprefix("sleep="))
                except ValueError:
                    seconds = -1.0
                if not (math.isfinite(seconds) and seconds >= 0):
                    raise _invalid(f"bad simulator marker [[sim:{spec}]]: sleep needs seconds >= 0", None)
                markers.sleep_s += seconds
            elif spec.startswith("fail-first-"):
                count_text, _, status_text = spec.removeprefix("fail-first-").partition(":")
                if not (count_text.isdigit() and _is_error_status(status_text)):
                    raise _invalid(f"bad simulator marker [[sim:{spec}]]: use [[sim:fail-first-N:STATUS]]", None)
                if markers.fail_first is None:
                    markers.fail_first = (int(count_text), int(status_text))
            elif _is_error_status(spec):
                if markers.status is None:
                    markers.status = int(spec)
            else:
                raise _invalid(f"unknown simulator marker [[sim:{spec}]]", None)
    return markers


def _is_error_status(text: str) -> bool:
    return text.isdigit() and len(text) == 3 and 400 <= int(text) <= 599
