"""One job: its results (searchable by custom_id), failures by reason, one full response."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.json import JSON
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Static

from llmbatch.client.cost import Pricing, estimate_cost
from shared.jobs import JobStatus
from shared.results import RequestResult, RequestStatus
from tui.backend import supports
from tui.formatting import number, progress_bar
from tui.screens.base import PollingScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.export import ExportScreen

RESULT_COLUMNS = ("Line", "custom_id", "Status", "HTTP", "Tokens", "Latency ms")
#: The most results the screen reads and holds: a job of millions is exported, not browsed.
RESULTS_SHOWN = 1000


def failure_groups(results: list[RequestResult]) -> list[tuple[str, str, int]]:
    """``(error_code, error_message, count)`` for every failed or cancelled request, most first."""
    counter: Counter[tuple[str, str]] = Counter(
        (r.error_code or r.status.value, r.error_message or "")
        for r in results
        if r.status is not RequestStatus.SUCCEEDED
    )
    return [(code, message, n) for (code, message), n in counter.most_common()]


def figures_line(job: JobStatus) -> str:
    """Latency of the answered requests, error rate and requests/s, from the job's counters."""
    f = job.figures()
    if f["latency_mean_ms"] is None:
        latency = "latency \N{EN DASH}"
    else:
        latency = (
            f"latency mean {number(int(f['latency_mean_ms']))} ms · p50 {number(int(f['latency_p50_ms'] or 0))} ms"
            f" · p99 {number(int(f['latency_p99_ms'] or 0))} ms (±{(f['latency_resolution'] or 0) * 100:.0f}%)"
        )
    errors = "\N{EN DASH}" if job.error_rate is None else f"{job.error_rate:.1%}"
    rps = "\N{EN DASH}" if job.requests_per_s is None else f"{job.requests_per_s:,.1f}"
    return f"{latency} · error rate {errors} · {rps} requests/s"


class JobDetailScreen(PollingScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("slash", "search", "Search"),
        Binding("e", "export", "Export"),
        Binding("r", "refresh", "Refresh"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("R", "retry_failed", "Retry failed"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.job: JobStatus | None = None
        self.results: list[RequestResult] = []
        self._loaded_terminal = -1
        #: How the job's cost is priced (the worker's configuration), read once; or why not.
        self.pricing: Pricing | None = None
        self.pricing_unavailable = ""

    @property
    def shown(self) -> list[RequestResult]:
        """The results that match the search, in file order."""
        query = self.query_one("#result-search", Input).value.strip().lower()
        return [r for r in self.results if query in r.custom_id.lower()] if query else self.results

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Loading…", id="job-summary")
        with Horizontal(id="job-body"):
            with Vertical(id="results-pane"):
                yield Input(placeholder="Search custom_id (/)", id="result-search")
                yield DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="side-pane"):
                yield Static("Failures by reason", classes="pane-title", id="failures-title")
                yield DataTable(id="failures-table", cursor_type="none")
                yield Static("Response", classes="pane-title")
                with VerticalScroll(id="response-scroll"):
                    yield Static("Select a result to see its full response.", id="response-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.job_id
        self.title = "Job detail"
        results = self.query_one("#results-table", DataTable)
        for label in RESULT_COLUMNS:
            results.add_column(label, key=label.lower())
        failures = self.query_one("#failures-table", DataTable)
        failures.add_columns("Count", "Reason", "Message")
        results.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Shown only when the client can do it (LlmbatchClient can; the demo stack cannot);
        # greyed out once the job is cancelled or finished.
        if action == "cancel_job":
            if not supports(self.console_app.client, "cancel"):
                return False
            return None if self.job is not None and (self.job.meta.cancel_requested or self.job.finished) else True
        if action == "retry_failed":
            return supports(self.console_app.client, "retry_failed")
        return True

    async def fetch(self) -> None:
        job = await self.client.status(self.job_id)
        self.job = job
        if self.pricing is None and not self.pricing_unavailable:
            await self.load_pricing()
        self.show_summary(job)
        self.refresh_bindings()
        if job.counts.terminal != self._loaded_terminal:
            self.results = await self.client.results(self.job_id, limit=RESULTS_SHOWN)
            self._loaded_terminal = job.counts.terminal
            self.show_results()
            self.show_failures()
            self.show_view_size(job)

    def show_view_size(self, job: JobStatus) -> None:
        """Say so when the screen holds only part of a big job's results."""
        partial = len(self.results) < job.counts.terminal
        hint = f" · first {number(len(self.results))} of {number(job.counts.terminal)}, export (e) for all"
        self.query_one("#result-search", Input).placeholder = "Search custom_id (/)" + (hint if partial else "")
        self.query_one("#failures-title", Static).update(
            f"Failures by reason (in the first {number(len(self.results))} results)"
            if partial
            else "Failures by reason"
        )

    def show_summary(self, job: JobStatus) -> None:
        c = job.counts
        line = Text.assemble(
            (job.meta.name or job.job_id, "bold"),
            "  ",
            (job.state.value, "bold"),
            "  ",
            progress_bar(c.terminal, job.total, width=20),
            f"  succeeded {number(c.succeeded)} · failed {number(c.failed)} · cancelled {number(c.cancelled)}"
            f" · pending {number(job.pending)} of {number(job.total)}"
            f" · tokens {number(c.prompt_tokens)} in / {number(c.completion_tokens)} out"
            f" · endpoint {job.meta.endpoint} · {job.meta.priority} priority · created {job.meta.created_at}",
        )
        line.append("\n" + figures_line(job))
        line.append("\n" + self.cost_line(job))
        if job.meta.lane:
            line.append("\n" + lane_line(job))
        self.query_one("#job-summary", Static).update(line)

    async def load_pricing(self) -> None:
        """The worker's memory, architecture and the stack's prices, from its configuration
        (only clients that can read it offer ``worker_configuration``)."""
        read = getattr(self.client, "worker_configuration", None)
        if not callable(read):
            self.pricing_unavailable = "this stack does not tell its prices"
            return
        try:
            self.pricing = Pricing.from_function_configuration(await read())
        except Exception as e:  # shown in the summary instead of the estimate
            self.pricing_unavailable = f"cannot read the worker's configuration: {e}"

    def cost_line(self, job: JobStatus) -> str:
        worker = f"worker {job.metering.compute_ms / 1000:,.1f} s"
        if self.pricing is None:
            return f"est. cost unavailable ({self.pricing_unavailable or 'loading'}) · {worker}"
        return f"est. cost {estimate_cost(job, self.pricing).summary()} · {worker}"

    def show_results(self) -> None:
        table = self.query_one("#results-table", DataTable)
        table.clear()
        for r in self.shown:
            status = Text(r.status.value, style="green" if r.status is RequestStatus.SUCCEEDED else "red")
            table.add_row(
                str(r.line),
                r.custom_id,
                status,
                "" if r.status_code is None else str(r.status_code),
                number(r.usage.total_tokens),
                number(r.latency_ms),
                key=r.custom_id,
            )
        self.show_response(self.shown[0] if self.shown else None)

    def show_failures(self) -> None:
        table = self.query_one("#failures-table", DataTable)
        table.clear()
        for code, message, n in failure_groups(self.results):
            table.add_row(Text(number(n), justify="right"), code, message)

    def show_response(self, result: RequestResult | None) -> None:
        pane = self.query_one("#response-pane", Static)
        if result is None:
            pane.update("No result matches." if self.results else "No results yet.")
            return
        pane.update(JSON(json.dumps(result.to_output_line()), indent=2))

    @on(DataTable.RowHighlighted, "#results-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        shown = self.shown
        if 0 <= event.cursor_row < len(shown):
            self.show_response(shown[event.cursor_row])

    @on(Input.Changed, "#result-search")
    def _search(self) -> None:
        self.show_results()

    @on(Input.Submitted, "#result-search")
    def _search_done(self) -> None:
        self.query_one("#results-table", DataTable).focus()

    def action_search(self) -> None:
        self.query_one("#result-search", Input).focus()

    def action_refresh(self) -> None:
        self._loaded_terminal = -1
        self.poll_now()

    def action_export(self) -> None:
        default = Path.cwd() / f"{self.job_id}.jsonl"
        self.app.push_screen(ExportScreen(default), self._export_to)

    def _export_to(self, path: Path | None) -> None:
        if path is not None:
            self.export(path)

    @work(exclusive=True, group="export")
    async def export(self, path: Path) -> None:
        try:
            summary = await self.client.export_results(self.job_id, path)
        except Exception as e:
            self.report(e)
            return
        missing = f", {summary.missing} still pending" if summary.missing else ""
        self.notify(f"{summary.written} result(s) written to {path}{missing}", title="Exported")

    def action_cancel_job(self) -> None:
        pending = (
            f" Its {number(self.job.pending)} pending request(s)" if self.job is not None else " Its pending requests"
        )
        self.app.push_screen(
            ConfirmScreen(
                "Cancel this job?",
                f"Cancel job {self.job_id}.{pending} end as cancelled without a model call; "
                "results already written are kept. This cannot be undone.",
                confirm_label="Cancel job",
            ),
            self._cancel_confirmed,
        )

    def _cancel_confirmed(self, yes: bool | None) -> None:
        if yes:
            self.cancel_job()

    @work(exclusive=True, group="job-action")
    async def cancel_job(self) -> None:
        """``cancel(job_id)``, then show the job as the client returns it."""
        try:
            job: JobStatus = await getattr(self.client, "cancel")(self.job_id)  # noqa: B009 - optional method
        except Exception as e:
            self.report(e)
            return
        if isinstance(job, JobStatus):
            self.job = job
            self.show_summary(job)
            self.refresh_bindings()
        self.notify(f"Cancelling {self.job_id}", title="Cancel requested")
        self.poll_now()

    def action_retry_failed(self) -> None:
        failed = (
            f"its {number(self.job.counts.failed)} failed request(s)" if self.job is not None else "its failed requests"
        )
        self.app.push_screen(
            ConfirmScreen(
                "Retry the failed requests?",
                f"Send {failed} of job {self.job_id} to the model again; each is a paid call. "
                "Their failures are replaced by the new results.",
                confirm_label="Retry failed",
            ),
            self._retry_confirmed,
        )

    def _retry_confirmed(self, yes: bool | None) -> None:
        if yes:
            self.retry_failed()

    @work(exclusive=True, group="job-action")
    async def retry_failed(self) -> None:
        """``retry_failed(job_id)``, then reload the results the retry reopened."""
        try:
            await getattr(self.client, "retry_failed")(self.job_id)  # noqa: B009 - optional method
        except Exception as e:
            self.report(e)
            return
        self.notify(f"Failed requests of {self.job_id} enqueued again", title="Retry")
        self._loaded_terminal = -1
        self.poll_now()


def lane_line(job: JobStatus) -> str:
    """The lane ``submit --lane`` chose and why; a batch-lane job's native progress."""
    m = job.meta
    text = f"lane {m.lane}: {m.lane_reason}"
    if m.lane == "batch":
        text += (
            f" · native {number(m.native_completed)} completed, {number(m.native_failed)} failed;"
            f" parts {m.native_parts_done} of {m.native_parts} done, {m.native_parts_running} running"
        )
    return text
