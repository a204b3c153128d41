"""A screen that refreshes itself from AWS in a worker, on a timer, backing off on errors."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from textual import work
from textual.screen import Screen
from textual.timer import Timer

if TYPE_CHECKING:
    from tui.app import LlmbatchConsole
    from tui.backend import ConsoleClient

#: The longest wait between polls after repeated errors.
MAX_BACKOFF_S = 60.0


def next_delay(refresh_s: float, failures: int) -> float:
    """``refresh_s`` while healthy; doubling per consecutive failure, capped."""
    if failures <= 0:
        return refresh_s
    return min(refresh_s * 2**failures, max(MAX_BACKOFF_S, refresh_s))


class ConsoleScreen(Screen[None]):
    """Gives screens typed access to the console app and its client."""

    @property
    def console_app(self) -> LlmbatchConsole:
        return cast("LlmbatchConsole", self.app)

    @property
    def client(self) -> ConsoleClient:
        return self.console_app.client

    def report(self, error: BaseException) -> None:
        self.console_app.report_error(error)

    def unsaved_changes(self) -> list[str]:
        """What leaving the console now would lose, one short phrase each (the console asks
        before quitting when there is any). Screens that hold edits say so."""
        return []


class PollingScreen(ConsoleScreen):
    """Calls :meth:`fetch` now and every ``refresh_s``; skips while another screen is on top."""

    failures: int = 0
    """Consecutive failed polls (drives the backoff)."""

    polls: int = 0
    """Polls completed (successful or not); tests wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self._timer: Timer | None = None

    @property
    def refresh_s(self) -> float:
        return self.console_app.refresh_s

    def on_mount(self) -> None:
        # Textual calls every class's on_mount along the MRO (subclass first): subclasses set
        # their widgets up in their own on_mount and must not call this one again.
        self.poll_now()

    def on_screen_resume(self) -> None:
        if self.polls:
            self.poll_now()

    def poll_now(self) -> None:
        """Refresh at once (and restart the schedule from here)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.poll()

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        if self.is_active:
            try:
                await self.fetch()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                self.report(e)
            else:
                self.failures = 0
            self.polls += 1
        self._timer = self.set_timer(next_delay(self.refresh_s, self.failures), self.poll)

    async def fetch(self) -> None:
        """Read from AWS and update the widgets. Raise to count a failure."""
        raise NotImplementedError
