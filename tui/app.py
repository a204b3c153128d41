"""The operator console: ``LlmbatchConsole``, built by :func:`create_app`, run by :func:`run`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from tui.backend import ClientFactory, ConsoleClient
from tui.commands import ConsoleCommands
from tui.errors import describe_error
from tui.messages import ActionFailed, JobSubmitted, OpenJob
from tui.quitting import FormValues, QuitConfirmScreen, submit_form, unsaved_changes
from tui.screens.dead_letters import DeadLettersScreen
from tui.screens.job_detail import JobDetailScreen
from tui.screens.jobs import JobsScreen
from tui.screens.limits import LimitsScreen
from tui.screens.queue import QueueScreen
from tui.screens.submit import SubmitScreen

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LlmbatchConsole(App[None]):
    CSS_PATH = "console.tcss"
    TITLE = "llmbatch"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    MODES: ClassVar[dict[str, Any]] = {
        "jobs": JobsScreen,
        "queue": QueueScreen,
        "limits": LimitsScreen,
        "submit": SubmitScreen,
        "dead_letters": DeadLettersScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "show_mode('jobs')", "Jobs"),
        Binding("f2", "show_mode('queue')", "Queue"),
        Binding("f3", "show_mode('limits')", "Limits"),
        Binding("f4", "show_mode('submit')", "Submit"),
        Binding("f5", "show_mode('dead_letters')", "Dead letters"),
        Binding("ctrl+t", "toggle_theme", "Theme"),
        # Quit as most terminal tools do; a focused input types its q (it takes printable
        # keys before the app's non-priority bindings), and one with selected text copies
        # on ctrl+c. ctrl+q keeps Textual's priority: pressed while asking, it quits.
        Binding("q", "quit_console", "Quit", show=False),
        Binding("ctrl+c", "quit_console", "Quit", show=False),
        Binding("ctrl+q", "quit_console", "Quit", show=False, priority=True),
    ]

    client: ConsoleClient
    """The stack's client, open while the app runs."""

    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        refresh_s: float = 3.0,
        clock: Clock = utc_now,
        start_dir: Path | None = None,
        stack_label: str = "",
    ) -> None:
        super().__init__()
        self.client_factory = client_factory
        self.refresh_s = refresh_s
        self.clock = clock
        self.start_dir = start_dir or Path.cwd()
        self.sub_title = stack_label
        self._resources = AsyncExitStack()
        #: The submit form as last submitted (quitting then loses nothing of it).
        self._submitted_form: FormValues | None = None

    async def on_mount(self) -> None:
        try:
            self.client = await self._resources.enter_async_context(self.client_factory())
        except Exception as e:
            title, message = describe_error(e)
            self.exit(return_code=1, message=f"{title}: {message}")
            return
        self.switch_mode("jobs")

    async def on_unmount(self) -> None:
        await self._resources.aclose()

    def report_error(self, error: BaseException) -> None:
        title, message = describe_error(error)
        self.notify(message, title=title, severity="error", timeout=8)

    def action_show_mode(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def open_screens(self) -> list[Screen[Any]]:
        """Every screen of every mode (Textual keeps a mode's screens while the app runs but
        shows no public list of them all)."""
        return [screen for stack in self._screen_stacks.values() for screen in stack]

    def action_quit_console(self) -> None:
        """Quit; first ask when something unsaved would be lost (asked already: quit)."""
        lost = unsaved_changes(self.open_screens(), self._submitted_form)
        if not lost or isinstance(self.screen, QuitConfirmScreen):
            self.exit()
            return
        self.push_screen(QuitConfirmScreen(lost), self._quit_answered)

    def _quit_answered(self, yes: bool | None) -> None:
        if yes:
            self.exit()

    @on(OpenJob)
    def _open_job(self, message: OpenJob) -> None:
        self.push_screen(JobDetailScreen(message.job_id))

    @on(JobSubmitted)
    def _job_submitted(self, message: JobSubmitted) -> None:
        # What was submitted is no longer unsaved.
        forms = [submit_form(s) for s in self.open_screens() if isinstance(s, SubmitScreen)]
        self._submitted_form = next((f for f in forms if f is not None), None)
        self.action_show_mode("jobs")

    @on(ActionFailed)
    def _action_failed(self, message: ActionFailed) -> None:
        self.report_error(message.error)


def create_app(
    client_factory: ClientFactory,
    *,
    refresh_s: float = 3.0,
    clock: Clock = utc_now,
    start_dir: Path | None = None,
    stack_label: str = "",
) -> LlmbatchConsole:
    """The console, reading through clients made by ``client_factory`` (an async context manager)."""
    return LlmbatchConsole(
        client_factory, refresh_s=refresh_s, clock=clock, start_dir=start_dir, stack_label=stack_label
    )


def run(stack_name: str | None = None) -> None:
    """Open the console on the named deployed stack, or on the running local stack."""
    from llmbatch.client.client import LlmbatchClient
    from llmbatch.client.stack import locate_stack

    resources = locate_stack(stack_name)
    app = create_app(lambda: LlmbatchClient(resources), stack_label=f"stack {resources.name} ({resources.region})")
    app.run()
