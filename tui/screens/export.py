"""Ask where to export a job's results."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label


class ExportScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, default: Path) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog"):
            yield Label("Export results (OpenAI Batch output format) to:")
            yield Input(str(self.default), id="export-path")
            yield Label("enter: export · escape: cancel", classes="hint")
        yield Footer()

    @on(Input.Submitted, "#export-path")
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(Path(value).expanduser() if value else None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
