"""One editable limit: its input, the value in force in AWS, and why an edit was refused."""

from __future__ import annotations

from datetime import datetime

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static

from tui.formatting import number, when


def parse_limit(raw: str, *, optional: bool) -> int | None:
    """The typed text as a whole number; empty means "no limit" where that is allowed."""
    text = raw.strip().replace(",", "").replace("_", "")
    if not text:
        if optional:
            return None
        raise ValueError("a value is required")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{raw.strip()!r} is not a whole number") from None


class LimitField(Vertical):
    """A row of the Limits form. ``name`` is the setting it edits."""

    def __init__(self, name: str, label: str, help_text: str, *, optional: bool) -> None:
        super().__init__(id=f"field-{name}", classes="limit-field")
        self.setting = name
        self.label = label
        self.help_text = help_text
        self.optional = optional
        self.in_force: int | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Horizontal(classes="limit-row"):
            yield Label(self.label, classes="limit-label")
            yield Input(
                type="integer",
                placeholder="no limit" if self.optional else "",
                id=f"input-{self.setting}",
                classes="limit-input",
            )
            yield Static("in force: …", classes="limit-in-force")
        yield Static(self.help_text, classes="limit-help")
        yield Static("", classes="limit-error")

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    def show_in_force(self, value: int | None, changed_at: datetime | None) -> None:
        # Refill the input only if the operator is not in the middle of editing it.
        if not self.loaded or self.input.value == _text(self.in_force):
            self.input.value = _text(value)
        self.in_force = value
        self.loaded = True
        shown = number(value) if value is not None or not self.optional else "no limit"
        self.query_one(".limit-in-force", Static).update(f"in force: {shown} · changed {when(changed_at)}")

    def show_error(self, reason: str | None) -> None:
        error = self.query_one(".limit-error", Static)
        error.update(f"✗ refused: {reason}" if reason else "")
        self.set_class(bool(reason), "-invalid")

    def reset(self) -> None:
        self.input.value = _text(self.in_force)
        self.show_error(None)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
