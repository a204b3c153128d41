"""A number with its title and a sparkline of its recent values."""

from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

#: Samples kept for each sparkline.
HISTORY = 60


class StatSpark(Vertical):
    """``title`` / current value / sparkline of the last :data:`HISTORY` samples."""

    def __init__(self, title: str, *, unit: str = "", id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.unit = unit
        self.samples: deque[float] = deque(maxlen=HISTORY)

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="stat-title")
        yield Static("\N{EN DASH}", classes="stat-value")
        yield Sparkline([], summary_function=max, classes="stat-spark")

    def push(self, value: float, *, text: str | None = None) -> None:
        self.samples.append(value)
        self.show(text if text is not None else f"{value:,.0f}")
        self.query_one(Sparkline).data = list(self.samples)

    def show(self, text: str) -> None:
        """Show ``text`` as the current value, adding nothing to the sparkline."""
        self.query_one(".stat-value", Static).update(f"{text} {self.unit}".rstrip())
