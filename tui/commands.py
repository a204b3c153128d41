"""The console's commands in the command palette (ctrl+p)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    #: An action of the app (``app.x``) or of the screen the palette was opened over (``screen.x``).
    action: str


COMMANDS = (
    Command("Show jobs", "Every job, newest first", "app.show_mode('jobs')"),
    Command("Show queue", "Queue depth, dead letters and processing rate", "app.show_mode('queue')"),
    Command("Show limits", "Edit worker concurrency and rate limits", "app.show_mode('limits')"),
    Command("Submit a job file", "Check and submit a JSONL job file", "app.show_mode('submit')"),
    Command(
        "Show dead letters",
        "Requests that used up their retries, and unreadable messages",
        "app.show_mode('dead_letters')",
    ),
    Command("Toggle light/dark theme", "Switch between the light and dark themes", "app.toggle_theme"),
    Command("Refresh", "Read this screen from AWS now", "screen.refresh"),
    Command("Open job", "Show the highlighted job's results", "screen.open_job"),
    Command("Export results", "Write this job's results to a file", "screen.export"),
    Command("Search results", "Filter this job's results by custom_id", "screen.search"),
    Command("Check job file", "Validate the chosen file against the stack", "screen.check"),
    Command("Submit job file", "Enqueue every request of the chosen file", "screen.submit"),
    Command("Apply changed limits", "Write every edited limit to AWS", "screen.apply_all"),
    Command("Cancel job", "Stop this job's pending requests", "screen.cancel_job"),
    Command("Retry failed requests", "Enqueue this job's failed requests again", "screen.retry_failed"),
    Command(
        "Redrive job's dead letters", "Send the highlighted job's dead letters back to the queue", "screen.redrive_job"
    ),
    Command("Redrive all dead letters", "Send every redrivable dead letter back to the queue", "screen.redrive_all"),
)


class ConsoleCommands(Provider):
    def _available(self) -> list[Command]:
        available = []
        for command in COMMANDS:
            namespace, _, action = command.action.partition(".")
            if namespace == "screen":
                name = action.split("(")[0]
                if not hasattr(self.screen, f"action_{name}"):
                    continue
                if self.screen.check_action(name, ()) is not True:
                    continue
            available.append(command)
        return available

    async def discover(self) -> Hits:
        for command in self._available():
            yield DiscoveryHit(command.name, partial(self._run, command.action), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._available():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), partial(self._run, command.action), help=command.help)

    async def _run(self, action: str) -> None:
        namespace, _, rest = action.partition(".")
        await self.app.run_action(rest, self.screen if namespace == "screen" else self.app)
