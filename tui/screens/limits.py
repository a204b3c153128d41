"""Limits edited in place: each is written to AWS, then read back and shown as in force."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Input, Static, Switch

from llmbatch.client.client import ESM_CONCURRENCY_BOUNDS
from shared.config import RuntimeLimits
from shared.errors import ConfigError
from tui.formatting import number
from tui.screens.base import PollingScreen
from tui.widgets.limit_field import LimitField, parse_limit
from tui.widgets.toggle_field import ToggleField

WORKER_CONCURRENCY = "worker_concurrency"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    optional: bool
    where: str

    def help(self) -> str:
        lo, hi = ESM_CONCURRENCY_BOUNDS if self.name == WORKER_CONCURRENCY else RuntimeLimits.BOUNDS[self.name]
        empty = "; empty for no limit" if self.optional else ""
        return f"{number(lo)} to {number(hi)}{empty} · {self.where}"


FIELDS = (
    FieldSpec(WORKER_CONCURRENCY, "Worker concurrency", False, "Lambda event source mapping MaximumConcurrency"),
    FieldSpec("max_concurrency", "Calls per invocation", False, "max_concurrency in the limits parameter"),
    FieldSpec("rpm_limit", "Requests per minute", True, "rpm_limit in the limits parameter"),
    FieldSpec("tpm_limit", "Tokens per minute", True, "tpm_limit in the limits parameter"),
    FieldSpec("max_inputs_per_call", "Inputs per call", False, "max_inputs_per_call (1: no request packing)"),
)
ADAPTIVE = "adaptive_concurrency"
ADAPTIVE_HELP = "on: calls in flight follow the endpoint, up to the calls per invocation · adaptive_concurrency"
AUTO_WORKERS = "auto_workers"
AUTO_WORKERS_HELP = (
    "on: worker concurrency follows what the endpoints declare they serve at once; "
    "a number entered above turns it off · auto_workers"
)
#: The on/off limits, each shown below the field it governs.
TOGGLES = {
    WORKER_CONCURRENCY: (AUTO_WORKERS, "Workers follow the endpoints", AUTO_WORKERS_HELP),
    "max_concurrency": (ADAPTIVE, "Adaptive concurrency", ADAPTIVE_HELP),
}


class LimitsScreen(PollingScreen):
    TITLE = "Limits"
    BINDINGS = [
        Binding("ctrl+s", "apply_all", "Apply changed"),
        Binding("escape", "reset", "Undo"),
        Binding("ctrl+r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._write_lock = asyncio.Lock()
        self.applied = 0
        """Edits handled (written or refused); tests wait on it."""

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="limits-form"):
            yield Static(
                "Enter applies an edited value, ctrl+s every changed one; workers pick up the limits within seconds.",
                classes="hint",
            )
            for spec in FIELDS:
                yield LimitField(spec.name, spec.label, spec.help(), optional=spec.optional)
                if spec.name in TOGGLES:  # beside the number it moves
                    yield ToggleField(*TOGGLES[spec.name])
        yield Static("Loading…", id="limits-status", classes="status-line")
        yield Footer()

    def field(self, name: str) -> LimitField:
        return self.query_one(f"#field-{name}", LimitField)

    def toggle(self, name: str) -> ToggleField:
        return self.query_one(f"#field-{name}", ToggleField)

    async def fetch(self) -> None:
        limits, workers, limits_at, workers_at = await asyncio.gather(
            self.client.get_limits(),
            self.client.get_worker_concurrency(),
            self.client.limits_changed_at(),
            self.client.worker_concurrency_changed_at(),
        )
        self.field(WORKER_CONCURRENCY).show_in_force(workers, workers_at)
        for spec in FIELDS:
            if spec.name != WORKER_CONCURRENCY:
                self.field(spec.name).show_in_force(getattr(limits, spec.name), limits_at)
        for name, *_ in TOGGLES.values():
            self.toggle(name).show_in_force(getattr(limits, name), limits_at)
        stamp = self.console_app.clock().strftime("%H:%M:%S")
        self.query_one("#limits-status", Static).update(f"read back from AWS at {stamp}")

    @on(Input.Submitted, ".limit-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        for spec in FIELDS:
            if event.input.id == f"input-{spec.name}":
                self.apply(spec.name, event.value)

    @on(Switch.Changed, ".limit-switch")
    def _switched(self, event: Switch.Changed) -> None:
        event.stop()
        for name, *_ in TOGGLES.values():
            if event.switch.id == f"switch-{name}":
                self.apply_toggle(name, event.value)

    def edited(self) -> list[LimitField]:
        """The fields whose input differs from the value in force: edits not applied (or refused)."""
        fields = [self.field(spec.name) for spec in FIELDS]
        return [
            f for f in fields if f.loaded and f.input.value.strip() != ("" if f.in_force is None else str(f.in_force))
        ]

    def unsaved_changes(self) -> list[str]:
        edited = self.edited()
        return [f"limits edited but not applied: {', '.join(f.label for f in edited)}"] if edited else []

    def action_apply_all(self) -> None:
        for f in self.edited():
            self.apply(f.setting, f.input.value)

    def action_reset(self) -> None:
        focused = self.focused
        for spec in FIELDS:
            f = self.field(spec.name)
            if focused is f.input:
                f.reset()

    def action_refresh(self) -> None:
        self.poll_now()

    @work(group="limits")
    async def apply(self, name: str, raw: str) -> None:
        """Validate, write, read back. A refused value is shown beside its field, unwritten."""
        f = self.field(name)
        try:
            try:
                value = parse_limit(raw, optional=f.optional)
            except ValueError as e:
                f.show_error(str(e))
                return
            await self._write_and_read_back(f, name, value, "no limit" if value is None else number(value))
        finally:
            self.applied += 1

    @work(group="limits")
    async def apply_toggle(self, name: str, value: bool) -> None:
        """Write an on/off limit and read it back; on failure the switch shows what is in force."""
        try:
            await self._write_and_read_back(self.toggle(name), name, value, "on" if value else "off")
        finally:
            self.applied += 1

    async def _write_and_read_back(
        self, f: LimitField | ToggleField, name: str, value: int | bool | None, shown: str
    ) -> None:
        """Write one limit (a refusal shown beside its field), then read them all back."""
        try:
            async with self._write_lock:
                await self._write(name, value)
        except ConfigError as e:
            f.show_error(str(e))
            return
        except Exception as e:
            self.report(e)
            return
        f.show_error(None)
        if isinstance(f, LimitField):
            f.in_force = value  # so the read-back refills the input
        self.notify(f"{f.label}: {shown}", title="Limit changed")
        try:
            await self.fetch()
        except Exception as e:
            self.report(e)

    async def _write(self, name: str, value: int | bool | None) -> None:
        if name == WORKER_CONCURRENCY:
            if value is None:
                raise ConfigError("a value is required")
            await self.client.set_worker_concurrency(value)
            return
        # Read the parameter again right before writing, so an edit elsewhere is not undone.
        current = await self.client.get_limits()
        await self.client.set_limits(current.with_changes(**{name: value}))
