"""Helpers for driving the console with Textual's Pilot (tests, snapshots, screenshots)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static


async def wait_for(pilot: Pilot[Any], predicate: Callable[[], object], *, within: float = 10.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or predicate}")
        await pilot.pause(0.05)


def text_of(widget: Static) -> str:
    """The plain text a Static shows."""
    content = widget.content
    plain = getattr(content, "plain", None)
    return plain if isinstance(plain, str) else str(content)
