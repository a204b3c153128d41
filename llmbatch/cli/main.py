"""``llmbatch``: the command line, one click command per subcommand."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import click

from llmbatch.cli.group import LOCAL_EXTRA_HINT, LOCAL_EXTRA_MODULES, LlmbatchGroup, missing_extra
from llmbatch.cli.limits import limits
from llmbatch.cli.options import StackParameter, endpoint_options, local_endpoint, stack_options, stack_parameter
from llmbatch.client.stack import locate_stack
from llmbatch.local.endpoint_choice import LocalEndpoint
from shared.priority import DEFAULT_PRIORITY, Priority

__all__ = ["LOCAL_EXTRA_HINT", "LOCAL_EXTRA_MODULES", "cli", "main", "missing_extra", "stack_parameter"]

#: How often `local up` looks whether Ctrl-C (or SIGTERM) asked it to stop.
STOP_POLL_S = 0.2


@click.group(
    "llmbatch",
    cls=LlmbatchGroup,
    # The benchmark's module imports the local stack: loaded only when `bench` runs.
    lazy={
        "bench": (
            "llmbatch.bench.run:command",
            "the benchmark: our worker against two baselines (see docs/benchmarks.md)",
        )
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def cli() -> None:
    """Serverless LLM batch inference on AWS."""


def main(argv: list[str] | None = None) -> int:
    """The ``llmbatch`` entry point: the group's exit code returned, not raised, so tests and
    ``python -m`` see the same code a shell does."""
    try:
        rv = cli.main(args=argv, prog_name="llmbatch", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:  # Ctrl-C
        return 130
    return rv if isinstance(rv, int) else 0


@cli.command()
@click.option(
    "--requests", type=int, help="requests in the job (default: each demo question once; 300 on the simulator)"
)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("demo-results.jsonl"))
@endpoint_options(LocalEndpoint.SMOLLM)
@click.option("--model", help="model name sent in each request (default: the local endpoint's)")
def demo(requests: int | None, out: Path, endpoint: str | None, endpoint_url: str | None, model: str | None) -> int:
    """run a sample job end to end on the local stack and print a summary"""
    chosen = local_endpoint(endpoint, endpoint_url, LocalEndpoint.SMOLLM)
    if endpoint_url and not model:
        raise click.UsageError("--endpoint-url needs --model (the name that server knows)")
    from llmbatch.cli.demo import default_model, run_demo

    outcome = run_demo(
        endpoint=chosen, requests=requests, out=out, endpoint_url=endpoint_url, model=model or default_model(chosen)
    )
    click.echo("\n".join(outcome.lines()))
    click.echo(f"results      {out}")
    summary = outcome.summary
    return 0 if summary.succeeded + summary.failed == summary.requests else 1


@cli.group(cls=LlmbatchGroup)
def local() -> None:
    """the local stack"""


@local.command()
@endpoint_options(LocalEndpoint.SIMULATOR)
@click.option("--slots", type=int, default=16, help="the simulator's concurrent slots")
@click.option(
    "--parameter",
    "parameters",
    multiple=True,
    type=StackParameter(),
    metavar="NAME=VALUE",
    help="a template parameter, as `sam deploy --parameter-overrides` takes it; VALUE @FILE reads a file "
    "(e.g. --parameter Endpoints=@endpoints.json); repeatable",
)
def up(endpoint: str | None, endpoint_url: str | None, slots: int, parameters: tuple[tuple[str, str], ...]) -> int:
    """start moto, the endpoint and the poller; Ctrl-C stops them"""
    chosen = local_endpoint(endpoint, endpoint_url, LocalEndpoint.SIMULATOR)
    from llmbatch.client.stack import state_path
    from llmbatch.local.provision import DEFAULT_TEMPLATE
    from llmbatch.local.runner import LocalStack
    from llmbatch.local.template import load_template

    known = load_template(DEFAULT_TEMPLATE).get("Parameters", {})
    unknown = sorted({name for name, _ in parameters if name not in known})
    if unknown:
        raise click.UsageError(f"template.yaml has no parameter {', '.join(unknown)}")
    # The handlers only note the request: a handler that took a lock (Event.set) could run
    # while the main thread holds that same lock, and Ctrl-C would hang the stack forever.
    stop_requested: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop_requested.append(signum))
    stack = LocalStack(
        endpoint=chosen,
        endpoint_url=endpoint_url,
        simulator_config={"slots": slots},
        parameter_overrides=dict(parameters),
        warm_containers=True,
    )
    resources = stack.start()
    try:
        say = _stderr
        say(f"local stack up; state in {state_path()}")
        say(f"  AWS (moto)      {resources.aws_endpoint_url}")
        say(f"  model endpoint  {resources.model_endpoint_url}")
        if stack.model_server:
            say(f'  model           "{stack.model_server.model_alias}" (jobs name it so)')
        say(f"  request queues  {resources.request_queue_url} (normal priority)")
        say(f"                  {resources.high_priority_queue_url} (high), {resources.low_priority_queue_url} (low)")
        say(f"  function logs   {stack.log_dir}/")
        say("Ctrl-C stops it.")
        while not stop_requested:
            time.sleep(STOP_POLL_S)
    finally:
        stack.stop()
        _stderr("local stack stopped")
    return 0


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name")
@click.option("--endpoint", default="default", help="name of the endpoint the job uses")
@click.option("--resume", metavar="JOB", help="finish enqueueing a job whose submit died part way")
@click.option(
    "--dry-run", is_flag=True, help="check the file and print its expected tokens, cost and duration; send nothing"
)
@click.option("--notify", metavar="URL", help="POST the job's signed Job Finished event to this https URL")
@click.option(
    "--priority",
    type=click.Choice([p.value for p in Priority]),
    default=DEFAULT_PRIORITY.value,
    show_default=True,
    help="high goes ahead of normal jobs; low runs only while no other job has work (--resume keeps the job's)",
)
@click.option(
    "--lane",
    type=click.Choice(["online", "batch", "auto"]),
    help="online (the default): the workers; batch: the endpoint's native batch API, at its discount;"
    " auto: batch when the job is big enough and --within allows the API's completion window",
)
@click.option("--within", metavar="DURATION", help="with --lane auto: how soon the job must finish (90m, 2h, 1d)")
@stack_options
def submit(
    file: Path,
    name: str | None,
    endpoint: str,
    resume: str | None,
    dry_run: bool,
    notify: str | None,
    priority: str,
    lane: str | None,
    within: str | None,
    stack: str | None,
    region: str | None,
) -> int:
    """validate a JSONL job file and enqueue it"""
    from llmbatch.cli import commands
    from llmbatch.cli.progress import sending_progress

    if within and lane != "auto":
        raise click.UsageError("--within goes with --lane auto")
    from llmbatch.client.lanes import parse_duration

    within_s = parse_duration(within) if within else None
    resources = locate_stack(stack, region=region)
    if dry_run:
        click.echo("\n".join(asyncio.run(commands.estimate(resources, file, endpoint=endpoint)).lines()))
        if lane is not None:  # the lane it would take, or why batch is refused
            choice = asyncio.run(commands.lane_choice(resources, file, lane=lane, within_s=within_s, endpoint=endpoint))
            click.echo(f"{'lane':<18} {choice.lane.value}: {choice.reason}")
        return 0
    if lane is not None:
        if resume:
            raise click.UsageError("--resume continues a job on its own lane: leave out --lane")
        with sending_progress("enqueueing") as on_progress:
            job_id, choice = asyncio.run(
                commands.submit_on_lane(
                    resources,
                    file,
                    lane=lane,
                    within_s=within_s,
                    name=name,
                    endpoint=endpoint,
                    on_progress=on_progress,
                    notify_url=notify or "",
                    priority=priority,
                )
            )
        _stderr(choice.line())
        click.echo(job_id)
        return 0
    with sending_progress("enqueueing") as on_progress:
        job_id = asyncio.run(
            commands.submit(
                resources,
                file,
                name=name,
                endpoint=endpoint,
                resume=resume,
                on_progress=on_progress,
                notify_url=notify or "",
                priority=priority,
            )
        )
    click.echo(job_id)
    return 0


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@stack_options
def status(job_id: str, as_json: bool, stack: str | None, region: str | None) -> int:
    """a job's progress"""
    from llmbatch.cli import commands

    resources = locate_stack(stack, region=region)
    click.echo(commands.report_text(asyncio.run(commands.report(resources, job_id)), as_json))
    return 0


@cli.command()
@click.argument("job_id")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True)
@click.option("--errors", type=click.Path(path_type=Path), help="write failed requests here instead of into --out")
@stack_options
def results(job_id: str, out: Path, errors: Path | None, stack: str | None, region: str | None) -> int:
    """write a job's results in the OpenAI Batch output format"""
    from llmbatch.cli import commands

    resources = locate_stack(stack, region=region)
    _stderr(asyncio.run(commands.results(resources, job_id, out, errors)))
    return 0


@cli.command()
@click.argument("job_id")
@stack_options
def cancel(job_id: str, stack: str | None, region: str | None) -> int:
    """stop a job: its remaining requests end as cancelled"""
    from llmbatch.cli import commands

    resources = locate_stack(stack, region=region)
    click.echo(commands.status_text(asyncio.run(commands.cancel(resources, job_id)), False))
    return 0


@cli.command()
@click.argument("job_id", required=False)
@stack_options
def redrive(job_id: str | None, stack: str | None, region: str | None) -> int:
    """move dead letters back to the queue and reopen their requests (JOB_ID: only this job's dead letters)"""
    from llmbatch.cli import commands

    moved = asyncio.run(commands.redrive(locate_stack(stack, region=region), job_id))
    click.echo(f"moved {moved} dead letter(s) back to the queue")
    return 0


@cli.command()
@click.argument("job_id")
@stack_options
def retry(job_id: str, stack: str | None, region: str | None) -> int:
    """send a job's failed requests again, as new attempts"""
    from llmbatch.cli import commands

    sent = asyncio.run(commands.retry(locate_stack(stack, region=region), job_id))
    click.echo(f"sent {sent} failed request(s) again")
    return 0


@cli.command()
@stack_options
def tui(stack: str | None, region: str | None) -> int:
    """the operator console"""
    from tui.app import run

    run(stack)
    return 0


@cli.command()
@click.option(
    "--scenario",
    type=click.Choice(["faults", "backlog", "poison"]),
    default="faults",
    help="faults: 429s, 5xx, hangs, duplicates and a killed container (default); backlog: a binding rate "
    "limit far below what the workers pull; poison: malformed messages among a job's requests",
)
@click.option("--requests", type=int, default=None, help="default: 2,000 (faults), 1,200 (backlog), 300 (poison)")
def drill(scenario: str, requests: int | None) -> int:
    """the fault drill: a job under injected faults, checked request by request"""
    report: Any
    if scenario == "backlog":
        from llmbatch.local.drill_backlog import run_backlog

        report = run_backlog(requests or 1200)
    elif scenario == "poison":
        from llmbatch.local.poison import run_poison_drill

        report = run_poison_drill(requests or 300)
    else:
        from llmbatch.local.drill import run_drill

        report = run_drill(requests or 2000)
    click.echo("\n".join(report.lines()))
    return 0 if report.ok else 1


@cli.command()
def schema() -> int:
    """print the SQS message's JSON schema"""
    from shared.messages import message_json_schema

    click.echo(json.dumps(message_json_schema(), indent=2))
    return 0


cli.add_command(limits)


def _stderr(line: str) -> None:
    click.echo(line, err=True)


if __name__ == "__main__":
    raise SystemExit(main())
