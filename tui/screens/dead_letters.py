"""Dead letters kept in the jobs table: each one's full body, and redriving them to the queue."""

from __future__ import annotations

import json
from functools import partial
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Static

from shared.deadletter import UNASSIGNED, DeadLetter, is_redrivable
from tui.screens.base import PollingScreen
from tui.screens.confirm import ConfirmScreen

#: (label, key, width)
COLUMNS = (
    ("Job", "job", 30),
    ("Key", "key", 14),
    ("Reason", "reason", 46),
    ("Dead at", "dead_at", 19),
)


def letter_key(letter: DeadLetter) -> str:
    """A row key: job and key together are the item's primary key."""
    return f"{letter.job_id}\N{UNIT SEPARATOR}{letter.key}"


def body_renderable(body: str) -> RenderableType:
    """The body pretty-printed when it is JSON, as it came otherwise."""
    try:
        json.loads(body)
    except ValueError:
        return Group(Text("(not JSON: shown as received)", style="italic red"), Text(body))
    return JSON(body, indent=2)


def redrivable_count(letters: list[DeadLetter]) -> int:
    return sum(1 for d in letters if is_redrivable(d))


class DeadLettersScreen(PollingScreen):
    TITLE = "Dead letters"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "redrive_job", "Redrive job"),
        Binding("D", "redrive_all", "Redrive all"),
        Binding("r", "refresh", "Refresh"),
    ]

    letters: list[DeadLetter]
    """The dead letters shown, newest first."""

    redrives: int = 0
    """Redrives finished (done or failed); tests wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.letters = []

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[str | Text] = DataTable(id="dead-table", cursor_type="row", zebra_stripes=True)
        yield table
        with Horizontal(id="dead-body"):
            with Vertical(id="dead-side"):
                yield Static("Dead letter", classes="pane-title")
                yield Static("", id="dead-summary")
            with Vertical(id="dead-body-pane"):
                yield Static("Body", classes="pane-title")
                with VerticalScroll(id="dead-scroll"):
                    yield Static("Loading…", id="dead-letter-body")
        yield Static("Loading…", id="dead-status", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#dead-table", DataTable)
        for label, key, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        table.focus()

    # ---- reading ------------------------------------------------------------------------

    async def fetch(self) -> None:
        self.show_letters(await self.client.dead_letters())

    def show_letters(self, letters: list[DeadLetter]) -> None:
        self.letters = sorted(letters, key=lambda d: (d.dead_at, d.job_id, d.key), reverse=True)
        table: DataTable[str | Text] = self.query_one("#dead-table", DataTable)
        selected = self.selected()
        table.clear()
        for d in self.letters:
            ok = is_redrivable(d)
            job = d.job_id if d.job_id != UNASSIGNED else "(unassigned)"
            table.add_row(
                Text(job, style="" if ok else "dim red"),
                Text(d.key, style="" if ok else "dim"),
                Text(d.reason if ok else f"✗ not redrivable · {d.reason}", style="" if ok else "red"),
                d.dead_at[:19].replace("T", " "),
                key=letter_key(d),
            )
        keys = [letter_key(d) for d in self.letters]
        if selected is not None and letter_key(selected) in keys:
            table.move_cursor(row=keys.index(letter_key(selected)))
        self.show_letter(self.selected())
        n_ok = redrivable_count(self.letters)
        unreadable = len(self.letters) - n_ok
        jobs = len({d.job_id for d in self.letters if is_redrivable(d)})
        status = f"{len(self.letters)} dead letter(s) · {n_ok} redrivable in {jobs} job(s)"
        if unreadable:
            status += f" · {unreadable} not redrivable (unassigned or unreadable)"
        self.query_one("#dead-status", Static).update(status)
        self.refresh_bindings()

    def selected(self) -> DeadLetter | None:
        try:
            table = self.query_one("#dead-table", DataTable)
        except NoMatches:
            return None
        row = table.cursor_row
        return self.letters[row] if self.letters and 0 <= row < len(self.letters) else None

    def show_letter(self, letter: DeadLetter | None) -> None:
        summary = self.query_one("#dead-summary", Static)
        body = self.query_one("#dead-letter-body", Static)
        if letter is None:
            summary.update("")
            body.update("No dead letters." if not self.letters else "Select a dead letter to see its body.")
            return
        ok = is_redrivable(letter)
        summary.update(
            Text.assemble(
                ("✓ redrivable (d redrives its job's letters)", "green")
                if ok
                else ("✗ not redrivable: job or body unreadable", "bold red"),
                ("\njob     ", "dim"),
                letter.job_id,
                ("\nkey     ", "dim"),
                letter.key,
                ("\ndead at ", "dim"),
                letter.dead_at,
                ("\nreason  ", "dim"),
                letter.reason or "(none given)",
            )
        )
        body.update(body_renderable(letter.body))

    @on(DataTable.RowHighlighted, "#dead-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.letters):
            self.show_letter(self.letters[event.cursor_row])
        self.refresh_bindings()

    # ---- acting -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "redrive_job":
            letter = self.selected()
            return True if letter is not None and is_redrivable(letter) else None
        if action == "redrive_all":
            return True if redrivable_count(self.letters) else None
        return True

    def action_refresh(self) -> None:
        self.poll_now()

    def action_redrive_job(self) -> None:
        letter = self.selected()
        if letter is None or not is_redrivable(letter):
            return
        job_id = letter.job_id
        n = sum(1 for d in self.letters if d.job_id == job_id and is_redrivable(d))
        self.app.push_screen(
            ConfirmScreen(
                "Redrive this job's dead letters?",
                f"Send {n} dead letter(s) of job {job_id} back to the request queue; "
                "their failed results are taken back and the job reopens.",
                confirm_label="Redrive",
            ),
            partial(self._confirmed, job_id),
        )

    def action_redrive_all(self) -> None:
        n = redrivable_count(self.letters)
        if not n:
            return
        jobs = len({d.job_id for d in self.letters if is_redrivable(d)})
        self.app.push_screen(
            ConfirmScreen(
                "Redrive every dead letter?",
                f"Send {n} dead letter(s) of {jobs} job(s) back to the request queue; "
                "their failed results are taken back and the jobs reopen. "
                "Letters that are not redrivable stay here.",
                confirm_label="Redrive all",
            ),
            partial(self._confirmed, None),
        )

    def _confirmed(self, job_id: str | None, yes: bool | None) -> None:
        if yes:
            self.redrive(job_id)

    @work(exclusive=True, group="redrive")
    async def redrive(self, job_id: str | None) -> None:
        """``redrive(job_id)`` (None: every job), then read the letters again."""
        try:
            moved = await self.client.redrive(job_id)
        except Exception as e:
            self.report(e)
        else:
            where = f"of {job_id} " if job_id else ""
            self.notify(f"{moved} request(s) {where}sent back to the request queue", title="Redriven")
        finally:
            self.redrives += 1
        self.poll_now()
