"""One on/off limit: its switch, the value in force in AWS, and why a change was refused."""

from __future__ import annotations

from datetime import datetime

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Static, Switch

from tui.formatting import when


class ToggleField(Vertical):
    """A row of the Limits form for a yes/no setting. ``name`` is the setting it edits."""

    def __init__(self, name: str, label: str, help_text: str) -> None:
        super().__init__(id=f"field-{name}", classes="limit-field")
        self.setting = name
        self.label = label
        self.help_text = help_text
        self.in_force: bool | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Horizontal(classes="limit-row"):
            yield Label(self.label, classes="limit-label")
            yield Switch(id=f"switch-{self.setting}", classes="limit-switch")
            yield Static("in force: …", classes="limit-in-force")
        yield Static(self.help_text, classes="limit-help")
        yield Static("", classes="limit-error")

    @property
    def switch(self) -> Switch:
        return self.query_one(Switch)

    def show_in_force(self, value: bool, changed_at: datetime | None) -> None:
        # Set without announcing it: only the operator's own flips are edits to write.
        with self.switch.prevent(Switch.Changed):
            self.switch.value = value
        self.in_force = value
        self.loaded = True
        self.query_one(".limit-in-force", Static).update(f"in force: {_text(value)} · changed {when(changed_at)}")

    def show_error(self, reason: str | None) -> None:
        self.query_one(".limit-error", Static).update(f"✗ refused: {reason}" if reason else "")
        self.set_class(bool(reason), "-invalid")


def _text(value: bool) -> str:
    return "on" if value else "off"
