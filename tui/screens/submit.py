"""Pick a job file, check it against the stack, then submit it with a progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DirectoryTree, Footer, Header, Input, Label, ProgressBar, Select, Static

from llmbatch.client.estimate import JobEstimate
from llmbatch.client.lanes import Lane, LaneChoice, LaneRefusedError, parse_duration
from shared.errors import ConfigError, JobFileError
from shared.priority import DEFAULT_PRIORITY, Priority
from tui.backend import supports
from tui.messages import JobSubmitted
from tui.screens.base import ConsoleScreen


class SubmitScreen(ConsoleScreen):
    TITLE = "Submit"
    BINDINGS = [
        Binding("ctrl+r", "check", "Check file"),
        Binding("ctrl+s", "submit", "Submit"),
    ]

    busy: bool = False
    """A check or submit is running."""

    last_job_id: str | None = None
    """The job the last submit created."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="submit-body"):
            yield DirectoryTree(self.console_app.start_dir, id="file-tree")
            with Vertical(id="submit-form"):
                yield Label("Job file (JSONL, OpenAI Batch format)")
                yield Input(placeholder="path/to/requests.jsonl", id="submit-path")
                with Horizontal(classes="form-row"):
                    with Vertical():
                        yield Label("Endpoint")
                        yield Input("default", id="submit-endpoint")
                    with Vertical():
                        yield Label("Job name")
                        yield Input(placeholder="(the file name)", id="submit-name")
                    with Vertical():
                        yield Label("Priority")
                        yield Select(
                            [(p.value, p) for p in Priority],
                            value=DEFAULT_PRIORITY,
                            allow_blank=False,
                            id="submit-priority",
                            tooltip="high goes ahead of normal jobs; low runs only while no other job has work",
                        )
                with Horizontal(classes="form-row"):
                    with Vertical():
                        yield Label("Lane")
                        yield Select(
                            [(lane.value, lane) for lane in Lane],
                            value=Lane.ONLINE,
                            allow_blank=False,
                            id="submit-lane",
                            tooltip="online: the queue and the workers; batch: the endpoint's native batch API, at its"
                            " discount, within its completion window; auto: batch when the file is big enough and"
                            " Within allows",
                        )
                    with Vertical():
                        yield Label("Within (auto lane)")
                        yield Input(placeholder="e.g. 2d (empty: no deadline)", id="submit-within")
                with Horizontal(classes="buttons"):
                    yield Button("Check", id="check", variant="primary")
                    yield Button("Submit", id="submit", variant="success")
                yield ProgressBar(total=100, id="submit-progress", show_eta=False)
                with VerticalScroll(id="check-scroll"):
                    yield Static("Choose a file, then Check it: nothing is sent until you Submit.", id="check-result")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#submit-path", Input).focus()

    @property
    def path(self) -> Path | None:
        raw = self.query_one("#submit-path", Input).value.strip()
        return Path(raw).expanduser() if raw else None

    @property
    def endpoint(self) -> str:
        return self.query_one("#submit-endpoint", Input).value.strip() or "default"

    @property
    def priority(self) -> Priority:
        value = self.query_one("#submit-priority", Select).value
        return value if isinstance(value, Priority) else DEFAULT_PRIORITY

    @property
    def lane(self) -> Lane:
        value = self.query_one("#submit-lane", Select).value
        return value if isinstance(value, Lane) else Lane.ONLINE

    def within_s(self) -> float | None:
        """The deadline of the auto lane, in seconds (None when empty); raises ConfigError
        for an unreadable one or one given with another lane (as ``submit --within``)."""
        raw = self.query_one("#submit-within", Input).value.strip()
        if not raw:
            return None
        if self.lane is not Lane.AUTO:
            raise ConfigError("Within goes with the auto lane")
        return parse_duration(raw)

    @on(DirectoryTree.FileSelected, "#file-tree")
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#submit-path", Input).value = str(event.path)
        self.show_result(Text(f"{event.path.name}: press ctrl+r to check it."))

    @on(Button.Pressed, "#check")
    def _check_pressed(self) -> None:
        self.action_check()

    @on(Button.Pressed, "#submit")
    def _submit_pressed(self) -> None:
        self.action_submit()

    @on(Input.Submitted, "#submit-path")
    def _path_entered(self) -> None:
        self.action_check()

    def show_result(self, text: Text | str) -> None:
        self.query_one("#check-result", Static).update(text)

    def show_problems(self, error: JobFileError) -> None:
        text = Text(f"✗ refused: {error}\n", style="bold red")
        for problem in error.problems:
            text.append(f"{problem}\n")
        more = error.total_problems - len(error.problems)
        if more > 0:
            text.append(f"… and {more} more problem(s)\n", style="italic")
        self.show_result(text)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        for button in self.query(Button):
            button.disabled = busy

    def action_check(self) -> None:
        if not self.busy:
            self.check()

    def action_submit(self) -> None:
        if not self.busy:
            self.submit()

    @work(exclusive=True, group="submit")
    async def check(self) -> None:
        path = self.path
        if path is None:
            self.show_result(Text("Enter or choose a job file first.", style="red"))
            return
        self._set_busy(True)
        try:
            estimate = await self.client.estimate(path, endpoint=self.endpoint)
        except JobFileError as e:
            self.show_problems(e)
        except Exception as e:
            self.show_result(Text(f"✗ {type(e).__name__}: {e}", style="red"))
            self.report(e)
        else:
            self.show_estimate(path, estimate)
        finally:
            self._set_busy(False)

    def show_estimate(self, path: Path, estimate: JobEstimate) -> None:
        """The file is valid: what it would use, cost and take, as ``submit --dry-run`` says."""
        text = Text(
            f"✓ {path.name}: {estimate.tokens.requests} request(s), all valid. Ready to submit.\n", style="green"
        )
        for line in estimate.lines()[1:]:  # the first says it was a dry run
            text.append(f"{line}\n")
        self.show_result(text)

    @work(exclusive=True, group="submit")
    async def submit(self) -> None:
        path = self.path
        if path is None:
            self.show_result(Text("Enter or choose a job file first.", style="red"))
            return
        try:
            within_s = self.within_s()
            if self.lane is not Lane.ONLINE and not supports(self.client, "submit_on_lane"):
                raise ConfigError("this stack offers the online lane only")
        except ConfigError as e:
            self.show_result(Text(f"✗ not submitted: {e}", style="red"))
            return
        bar = self.query_one("#submit-progress", ProgressBar)
        bar.update(total=None, progress=0)
        name = self.query_one("#submit-name", Input).value.strip() or None
        choice: LaneChoice | None = None

        def progress(sent: int, total: int) -> None:
            bar.update(total=total, progress=sent)

        self._set_busy(True)
        self.show_result(Text(f"Submitting {path.name}…"))
        try:
            if self.lane is Lane.ONLINE:
                job_id = await self.client.submit(
                    path, name=name, endpoint=self.endpoint, on_progress=progress, priority=self.priority
                )
            else:
                job_id, choice = await getattr(self.client, "submit_on_lane")(  # noqa: B009 - optional method
                    path,
                    lane=self.lane,
                    within_s=within_s,
                    name=name,
                    endpoint=self.endpoint,
                    on_progress=progress,
                    priority=self.priority,
                )
        except JobFileError as e:
            self.show_problems(e)
            bar.update(total=100, progress=0)
        except LaneRefusedError as e:  # nothing was created
            self.show_result(Text(f"✗ not submitted: {e}", style="red"))
            bar.update(total=100, progress=0)
        except Exception as e:
            self.show_result(Text(f"✗ not submitted: {type(e).__name__}: {e}", style="red"))
            self.report(e)
        else:
            self.last_job_id = job_id
            bar.update(total=bar.total or 1, progress=bar.total or 1)
            done = Text(f"✓ submitted {path.name} as {job_id} ({self.priority} priority)", style="green")
            if choice is not None:
                done.append(f"\n{choice.line()}")
            self.show_result(done)
            self.notify(job_id, title="Job submitted")
            self.post_message(JobSubmitted(job_id))
        finally:
            self._set_busy(False)
