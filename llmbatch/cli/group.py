"""The click group every ``llmbatch`` command hangs off: where a failure becomes one line and
an exit code, and where commands whose modules are heavy are loaded only when run."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import IO, Any

import click

from shared.errors import JobFileError, LlmbatchError

#: What the `local` extra installs for `local up`, `demo`, `drill` and `bench` (moto's server
#: and its web stack, PyYAML for template.yaml); `pip install llmbatch` alone lacks them.
LOCAL_EXTRA_MODULES = frozenset({"moto", "yaml", "werkzeug", "flask", "flask_cors"})
LOCAL_EXTRA_HINT = "pip install 'llmbatch[local]'"


def missing_extra(e: ModuleNotFoundError, command: str) -> str | None:
    """The one line that says which extra ``command`` needs, when ``e`` is a module of the
    ``local`` extra; None for any other missing module (a real bug, raised as it is)."""
    if (e.name or "").split(".")[0] not in LOCAL_EXTRA_MODULES:
        return None
    return f"llmbatch {command}: needs the local extra ({e.name} is not installed): {LOCAL_EXTRA_HINT}"


class CommandFailed(click.ClickException):
    """A failure already worded for the operator: its lines go to stderr as they are (no
    ``Error:`` prefix, no usage), and the command exits 1."""

    exit_code = 1

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.message, file=file, err=file is None)


class CommandRefused(CommandFailed):
    """Input refused before anything was done (a bad job file, a missing extra): exit 2, as
    for a usage error."""

    exit_code = 2


def job_file_lines(e: JobFileError) -> list[str]:
    """Each problem by FILE:LINE (the first ones), how many more, and that nothing was sent."""
    lines = list(e.problems)
    more = e.total_problems - len(e.problems)
    if more > 0:
        lines.append(f"... and {more} more problem(s)")
    lines.append(f"refused: {e.total_problems} problem(s); nothing was enqueued")
    return lines


class LlmbatchGroup(click.Group):
    """A group whose commands report our errors in one clear line, and which imports a lazy
    command's module only when that command runs (``lazy``: name to ``("module:attribute",
    short help)``), so ``llmbatch --help`` and the other commands work without its imports."""

    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name][0].partition(":")
        try:
            command = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as e:
            if (hint := missing_extra(e, _path(ctx, cmd_name))) is None:
                raise
            raise CommandRefused([hint]) from e
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}:{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a lazy command is listed by its short help, not imported."""
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            elif (cmd := super().get_command(ctx, name)) is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            if (hint := missing_extra(e, _path(ctx, ctx.invoked_subcommand))) is None:
                raise
            raise CommandRefused([hint]) from e
        except JobFileError as e:
            raise CommandRefused(job_file_lines(e)) from e
        except LlmbatchError as e:
            raise CommandFailed([f"llmbatch: {e.title}: {e}"]) from e


def _path(ctx: click.Context, subcommand: str | None) -> str:
    """The command as typed after ``llmbatch`` (``local up``), for the hint's wording."""
    words = ctx.command_path.split()[len(ctx.find_root().command_path.split()) :]
    return " ".join([*words, subcommand or ""]).strip()
