"""Every job of the stack, newest first, refreshed on a timer."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from shared.jobs import JobStatus
from tui.formatting import number, progress_bar, state_text
from tui.messages import OpenJob
from tui.rates import RateTracker, eta_text, rate_text
from tui.screens.base import PollingScreen

#: (label, key, width); the job id already tells when the job was created. The widths keep
#: the table (a cell of padding either side of each column, and a scrollbar) within 120 columns.
COLUMNS = (
    ("Job", "job", None),
    ("Name", "name", 13),
    ("Status", "status", None),
    ("Progress", "progress", None),
    ("OK", "succeeded", None),
    ("Failed", "failed", None),
    ("Pending", "pending", None),
    ("Tokens", "tokens", None),
    ("req/s", "rate", 5),
    ("ETA", "eta", 6),
)


class JobsScreen(PollingScreen):
    TITLE = "Jobs"
    BINDINGS = [
        Binding("enter", "open_job", "Open job"),
        Binding("r", "refresh", "Refresh"),
    ]

    jobs: list[JobStatus]
    """The jobs shown, newest first."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs = []
        self.rates = RateTracker()

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[str | Text] = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("Loading…", id="jobs-status", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#jobs-table", DataTable)
        for label, key, width in COLUMNS:
            table.add_column(label, key=key, width=width)

    async def fetch(self) -> None:
        jobs = await self.client.list_jobs()
        self.show_jobs(jobs)

    def show_jobs(self, jobs: list[JobStatus], at: datetime | None = None) -> None:
        """Show ``jobs`` as polled at ``at`` (the app's clock by default)."""
        at = at or self.console_app.clock()
        rates = {j.job_id: self.rates.observe(j.job_id, j.counts.terminal, at) for j in jobs}
        self.rates.forget_except(set(rates))
        self.jobs = sorted(jobs, key=lambda j: (j.meta.created_at, j.job_id), reverse=True)
        table: DataTable[str | Text] = self.query_one("#jobs-table", DataTable)
        selected = self.selected_job_id()
        table.clear()
        for job in self.jobs:
            c = job.counts
            table.add_row(
                job.job_id,
                job.meta.name,
                state_text(job),
                progress_bar(c.terminal, job.total, width=4),
                Text(number(c.succeeded), style="green", justify="right"),
                Text(number(c.failed), style="red" if c.failed else "", justify="right"),
                Text(number(job.pending), justify="right"),
                Text(number(c.prompt_tokens + c.completion_tokens), justify="right"),
                Text(rate_text(job, rates[job.job_id]), justify="right"),
                Text(eta_text(job, rates[job.job_id]), justify="right"),
                key=job.job_id,
            )
        if selected is not None and selected in {j.job_id for j in self.jobs}:
            table.move_cursor(row=table.get_row_index(selected))
        stamp = at.strftime("%H:%M:%S")
        self.query_one("#jobs-status", Static).update(f"{len(self.jobs)} job(s) · updated {stamp}")

    def selected_job_id(self) -> str | None:
        table = self.query_one("#jobs-table", DataTable)
        if table.row_count == 0:
            return None
        return self.jobs[table.cursor_row].job_id if table.cursor_row < len(self.jobs) else None

    def action_open_job(self) -> None:
        job_id = self.selected_job_id()
        if job_id is not None:
            self.post_message(OpenJob(job_id))

    @on(DataTable.RowSelected, "#jobs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_job()

    def action_refresh(self) -> None:
        self.poll_now()
