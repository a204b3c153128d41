"""``llmbatch limits``: the live limits the console's Limits screen shows, read and changed from
a shell or a script. Changes go through the same client methods and ``RuntimeLimits`` model as
the console's, so a value one refuses the other refuses too, with the same words."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
from click.core import ParameterSource

from llmbatch.cli.group import LlmbatchGroup
from llmbatch.cli.options import F, stack_options
from llmbatch.client.client import ESM_CONCURRENCY_BOUNDS, LlmbatchClient
from llmbatch.client.stack import StackResources, locate_stack
from shared.config import RuntimeLimits

#: The event source mapping's MaximumConcurrency: a live limit kept outside the limits parameter.
WORKER_CONCURRENCY = "worker_concurrency"


@dataclass(frozen=True)
class LimitOption:
    """One live limit: the setting it is, its ``limits set`` option, and its label."""

    setting: str
    option: str
    label: str
    where: str

    @property
    def optional(self) -> bool:
        """Whether "no limit" is a value (RPM and TPM)."""
        field = RuntimeLimits.model_fields.get(self.setting)
        return field is not None and field.default is None

    def help(self) -> str:
        if self.setting == "adaptive_concurrency":
            return f"calls in flight follow the endpoint, up to --calls ({self.where})"
        lo, hi = ESM_CONCURRENCY_BOUNDS if self.setting == WORKER_CONCURRENCY else RuntimeLimits.BOUNDS[self.setting]
        empty = ", or none for no limit" if self.optional else ""
        if self.setting == WORKER_CONCURRENCY:
            empty = ", or auto to follow what the endpoints declare they serve at once"
        return f"{lo:,} to {hi:,}{empty} ({self.where})"


#: Every live limit, in the console's order; the per-job caps follow (the console leaves them
#: to the stack's parameters, but they are live too).
LIMITS = (
    LimitOption(WORKER_CONCURRENCY, "workers", "worker concurrency", "event source mapping MaximumConcurrency"),
    LimitOption("max_concurrency", "calls", "calls per invocation", "max_concurrency"),
    LimitOption("adaptive_concurrency", "adaptive", "adaptive concurrency", "adaptive_concurrency"),
    LimitOption("rpm_limit", "rpm", "requests per minute", "rpm_limit"),
    LimitOption("tpm_limit", "tpm", "tokens per minute", "tpm_limit"),
    LimitOption("max_inputs_per_call", "inputs-per-call", "inputs per call", "max_inputs_per_call; 1: no packing"),
    LimitOption("max_requests_per_job", "max-requests-per-job", "requests per job", "max_requests_per_job"),
    LimitOption("max_tokens_per_request", "max-tokens-per-request", "max_tokens per request", "max_tokens_per_request"),
)


#: ``limits set --workers auto``: the workers follow the endpoints (``auto_workers``).
AUTO = "auto"


class LimitValue(click.ParamType):
    """A whole number (``3,000`` and ``3_000`` too), or ``none`` where no limit is allowed,
    or ``auto`` where the stack can choose. Its range is left to ``RuntimeLimits``, which
    words the refusal as the console does."""

    name = "limit"

    def __init__(self, *, optional: bool, auto: bool = False) -> None:
        self.optional = optional
        self.auto = auto

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str | None:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().replace(",", "").replace("_", "")
        if self.optional and text.lower() == "none":
            return None
        if self.auto and text.lower() == AUTO:
            return AUTO
        try:
            return int(text)
        except ValueError:
            self.fail(f"{str(value).strip()!r} is not a whole number", param, ctx)


@dataclass(frozen=True)
class LiveLimits:
    """The limits in force, and when each place that holds them last changed."""

    limits: RuntimeLimits
    worker_concurrency: int | None
    limits_changed_at: datetime | None
    workers_changed_at: datetime | None

    def values(self) -> dict[str, Any]:
        return {WORKER_CONCURRENCY: self.worker_concurrency, **self.limits.model_dump()}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.values(),
            "limits_changed_at": _iso(self.limits_changed_at),
            "worker_concurrency_changed_at": _iso(self.workers_changed_at),
        }

    def lines(self) -> list[str]:
        values = self.values()
        rows = [(spec.label, _shown(values[spec.setting]), _flag(spec)) for spec in LIMITS]
        if self.limits.auto_workers:  # the workers' row: whose number it is
            label, value, flag = rows[0]
            rows[0] = (label, f"{value} (auto)", flag)
        rows += [
            ("limits changed", _iso(self.limits_changed_at) or "unknown", ""),
            ("workers changed", _iso(self.workers_changed_at) or "unknown", ""),
        ]
        return [f"{label:<24} {value:<12} {flag}".rstrip() for label, value, flag in rows]


async def read_limits(client: LlmbatchClient) -> LiveLimits:
    """What the console's Limits screen reads, in one go."""
    limits, workers, limits_at, workers_at = await asyncio.gather(
        client.get_limits(),
        client.get_worker_concurrency(),
        client.limits_changed_at(),
        client.worker_concurrency_changed_at(),
    )
    return LiveLimits(limits, workers, limits_at, workers_at)


async def change_limits(client: LlmbatchClient, changes: dict[str, Any]) -> LiveLimits:
    """Apply only ``changes``, then read everything back.

    Every check runs before the first write: the limits parameter's changes are validated by
    ``with_changes`` (read right before, so an edit made elsewhere is kept), and the worker
    concurrency by ``set_worker_concurrency``, which refuses before it writes. So a refused
    value leaves both places as they were.
    """
    limit_changes = {k: v for k, v in changes.items() if k != WORKER_CONCURRENCY}
    workers = changes.get(WORKER_CONCURRENCY)
    if workers == AUTO:  # the workers follow the endpoints: set_limits sizes them
        limit_changes["auto_workers"] = True
    new = (await client.get_limits()).with_changes(**limit_changes) if limit_changes else None
    if isinstance(workers, int):
        await client.set_worker_concurrency(workers)  # the operator's number: auto off
        if new is not None:
            new = new.with_changes(auto_workers=False)
    if new is not None:
        await client.set_limits(new)
    if workers == AUTO and await client.size_workers(new) is None:
        click.echo(
            "note: not every endpoint declares what it serves at once (max_concurrency; EndpointMaxConcurrency "
            "for the stack's first): the workers stay as they are until all do",
            err=True,
        )
    return await read_limits(client)


async def _run_read(resources: StackResources) -> LiveLimits:
    async with LlmbatchClient(resources) as client:
        return await read_limits(client)


async def _run_change(resources: StackResources, changes: dict[str, Any]) -> LiveLimits:
    async with LlmbatchClient(resources) as client:
        return await change_limits(client, changes)


def _flag(spec: LimitOption) -> str:
    return "--adaptive/--no-adaptive" if spec.setting == "adaptive_concurrency" else f"--{spec.option}"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "no limit" if value is None else f"{value:,}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _printed(live: LiveLimits, as_json: bool) -> None:
    click.echo(json.dumps(live.to_dict(), indent=2) if as_json else "\n".join(live.lines()))


@click.group("limits", cls=LlmbatchGroup, invoke_without_command=True)
@stack_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def limits(ctx: click.Context, stack: str | None, region: str | None, as_json: bool) -> int:
    """the live limits, as the console's Limits screen shows them; `limits set` changes them"""
    if ctx.invoked_subcommand is not None:
        return 0  # `limits set` reads these options of ours as its defaults
    _printed(asyncio.run(_run_read(locate_stack(stack, region=region))), as_json)
    return 0


def _limit_options(f: F) -> F:
    """One option per live limit, each named and explained from :data:`LIMITS`."""
    for spec in reversed(LIMITS):
        if spec.setting == "adaptive_concurrency":
            f = click.option("--adaptive/--no-adaptive", "adaptive_concurrency", default=None, help=spec.help())(f)
        else:
            auto = spec.setting == WORKER_CONCURRENCY
            f = click.option(
                f"--{spec.option}",
                spec.setting,
                type=LimitValue(optional=spec.optional, auto=auto),
                metavar="N|none" if spec.optional else ("N|auto" if auto else "N"),
                help=spec.help(),
            )(f)
    return f


@limits.command("set")
@_limit_options
@stack_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def set_limits(ctx: click.Context, stack: str | None, region: str | None, as_json: bool, **given: Any) -> int:
    """change only the limits given, checked as the console checks them, and print them read back"""
    # By where each came from, not its value: `--rpm none` is a change to None.
    changes = {
        name: value for name, value in given.items() if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    if not changes:
        raise click.UsageError("name at least one limit to change (see llmbatch limits set --help)")
    outer = ctx.parent.params if ctx.parent is not None else {}
    resources = locate_stack(stack or outer.get("stack"), region=region or outer.get("region"))
    _printed(asyncio.run(_run_change(resources, changes)), as_json or bool(outer.get("as_json")))
    return 0
