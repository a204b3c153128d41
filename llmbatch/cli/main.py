"""``llmbatch``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from llmbatch.client.stack import locate_stack
from llmbatch.local.endpoint_choice import LocalEndpoint
from shared.errors import JobFileError, LlmbatchError

#: How often `local up` looks whether Ctrl-C (or SIGTERM) asked it to stop.
STOP_POLL_S = 0.2
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


def _stack_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", help="a deployed stack's name (default: the running local stack)")
    p.add_argument("--region", help="AWS region of the deployed stack")


def _endpoint_args(p: argparse.ArgumentParser, default: LocalEndpoint) -> None:
    where = p.add_mutually_exclusive_group()
    # No argparse default: it would hide `--endpoint X --endpoint-url Y` from the exclusion check.
    where.add_argument(
        "--endpoint",
        type=LocalEndpoint,
        choices=list(LocalEndpoint),
        help=f"the model endpoint the local stack starts (default {default.value})",
    )
    where.add_argument("--endpoint-url", help="an OpenAI-compatible base URL instead, e.g. http://127.0.0.1:11434/v1")
    p.set_defaults(default_endpoint=default)


def stack_parameter(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (``VALUE`` ``@path``: the file's text) for ``local up --parameter``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text().strip()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"{name}: cannot read {value[1:]}: {e.strerror}") from e
    return name.strip(), value


def _local_endpoint(args: argparse.Namespace) -> LocalEndpoint:
    return LocalEndpoint(args.endpoint or args.default_endpoint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmbatch", description="Serverless LLM batch inference on AWS.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a sample job end to end on the local stack and print a summary")
    demo.add_argument(
        "--requests", type=int, help="requests in the job (default: each demo question once; 300 on the simulator)"
    )
    demo.add_argument("-o", "--out", type=Path, default=Path("demo-results.jsonl"))
    _endpoint_args(demo, LocalEndpoint.SMOLLM)
    demo.add_argument("--model", help="model name sent in each request (default: the local endpoint's)")

    local = sub.add_parser("local", help="the local stack")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start moto, the endpoint and the poller; Ctrl-C stops them")
    _endpoint_args(up, LocalEndpoint.SIMULATOR)
    up.add_argument("--slots", type=int, default=16, help="the simulator's concurrent slots")
    up.add_argument(
        "--parameter",
        action="append",
        default=[],
        type=stack_parameter,
        metavar="NAME=VALUE",
        help="a template parameter, as `sam deploy --parameter-overrides` takes it; VALUE @FILE reads a file "
        "(e.g. --parameter Endpoints=@endpoints.json); repeatable",
    )

    s = sub.add_parser("submit", help="validate a JSONL job file and enqueue it")
    s.add_argument("file", type=Path)
    s.add_argument("--name")
    s.add_argument("--endpoint", default="default", help="name of the endpoint the job uses")
    s.add_argument("--resume", metavar="JOB", help="finish enqueueing a job whose submit died part way")
    _stack_arg(s)

    st = sub.add_parser("status", help="a job's progress")
    st.add_argument("job_id")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    _stack_arg(st)

    r = sub.add_parser("results", help="write a job's results in the OpenAI Batch output format")
    r.add_argument("job_id")
    r.add_argument("-o", "--out", type=Path, required=True)
    r.add_argument("--errors", type=Path, help="write failed requests here instead of into --out")
    _stack_arg(r)

    c = sub.add_parser("cancel", help="stop a job: its remaining requests end as cancelled")
    c.add_argument("job_id")
    _stack_arg(c)

    rd = sub.add_parser("redrive", help="move dead letters back to the queue and reopen their requests")
    rd.add_argument("job_id", nargs="?", help="only this job's dead letters")
    _stack_arg(rd)

    rt = sub.add_parser("retry", help="send a job's failed requests again, as new attempts")
    rt.add_argument("job_id")
    _stack_arg(rt)

    t = sub.add_parser("tui", help="the operator console")
    _stack_arg(t)

    d = sub.add_parser("drill", help="the fault drill: a job under injected faults, checked request by request")
    d.add_argument(
        "--scenario",
        choices=("faults", "backlog", "poison"),
        default="faults",
        help="faults: 429s, 5xx, hangs, duplicates and a killed container (default); backlog: a binding rate "
        "limit far below what the workers pull; poison: malformed messages among a job's requests",
    )
    d.add_argument("--requests", type=int, default=None, help="default: 2,000 (faults), 1,200 (backlog), 300 (poison)")

    b = sub.add_parser("bench", help="the benchmark: our worker against two baselines (see docs/benchmarks.md)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to the benchmark (try: bench -- --help)")

    sub.add_parser("schema", help="print the SQS message's JSON schema")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"] and argv[1:2] not in (["-h"], ["--help"]):
        # Every later argument is the benchmark's, in order (`llmbatch bench --write-docs`):
        # argparse's REMAINDER does not take a first argument that looks like an option.
        try:
            from llmbatch.bench.run import main as bench_main

            return bench_main([a for a in argv[1:] if a != "--"])
        except ModuleNotFoundError as e:
            if (hint := missing_extra(e, "bench")) is None:
                raise
            print(hint, file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ModuleNotFoundError as e:
        if (hint := missing_extra(e, args.command)) is None:
            raise
        print(hint, file=sys.stderr)
        return 2
    except JobFileError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        more = e.total_problems - len(e.problems)
        if more > 0:
            print(f"... and {more} more problem(s)", file=sys.stderr)
        print(f"refused: {e.total_problems} problem(s); nothing was enqueued", file=sys.stderr)
        return 2
    except LlmbatchError as e:
        print(f"llmbatch: {e.title}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from llmbatch.cli import commands

    if args.command == "schema":
        from shared.messages import message_json_schema

        print(json.dumps(message_json_schema(), indent=2))
        return 0
    if args.command == "demo":
        from llmbatch.cli.demo import default_model, run_demo

        if args.endpoint_url and not args.model:
            print("llmbatch demo: --endpoint-url needs --model (the name that server knows)", file=sys.stderr)
            return 2
        outcome = run_demo(
            endpoint=_local_endpoint(args),
            requests=args.requests,
            out=args.out,
            endpoint_url=args.endpoint_url,
            model=args.model or default_model(_local_endpoint(args)),
        )
        print("\n".join(outcome.lines()))
        print(f"results      {args.out}")
        summary = outcome.summary
        return 0 if summary.succeeded + summary.failed == summary.requests else 1
    if args.command == "bench":
        from llmbatch.bench.run import main as bench_main

        return bench_main([a for a in args.bench_args if a != "--"])
    if args.command == "drill":
        return _drill(args.scenario, args.requests)
    if args.command == "local":
        return _local_up(args)
    if args.command == "tui":
        from tui.app import run

        run(args.stack)
        return 0

    resources = locate_stack(args.stack, region=args.region)
    if args.command == "submit":
        print(
            asyncio.run(
                commands.submit(resources, args.file, name=args.name, endpoint=args.endpoint, resume=args.resume)
            )
        )
    elif args.command == "status":
        print(commands.report_text(asyncio.run(commands.report(resources, args.job_id)), args.json))
    elif args.command == "cancel":
        print(commands.status_text(asyncio.run(commands.cancel(resources, args.job_id)), False))
    elif args.command == "redrive":
        print(f"moved {asyncio.run(commands.redrive(resources, args.job_id))} dead letter(s) back to the queue")
    elif args.command == "retry":
        print(f"sent {asyncio.run(commands.retry(resources, args.job_id))} failed request(s) again")
    elif args.command == "results":
        print(asyncio.run(commands.results(resources, args.job_id, args.out, args.errors)), file=sys.stderr)
    return 0


def _drill(scenario: str, requests: int | None) -> int:
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
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _local_up(args: argparse.Namespace) -> int:
    from llmbatch.client.stack import state_path
    from llmbatch.local.runner import LocalStack

    # The handlers only note the request: a handler that took a lock (Event.set) could run
    # while the main thread holds that same lock, and Ctrl-C would hang the stack forever.
    stop_requested: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop_requested.append(signum))
    from llmbatch.local.provision import DEFAULT_TEMPLATE
    from llmbatch.local.template import load_template

    known = load_template(DEFAULT_TEMPLATE).get("Parameters", {})
    unknown = sorted({name for name, _ in args.parameter if name not in known})
    if unknown:
        print(f"llmbatch: template.yaml has no parameter {', '.join(unknown)}", file=sys.stderr)
        return 2
    stack = LocalStack(
        endpoint=_local_endpoint(args),
        endpoint_url=args.endpoint_url,
        simulator_config={"slots": args.slots},
        parameter_overrides=dict(args.parameter),
    )
    resources = stack.start()
    try:
        print(f"local stack up; state in {state_path()}", file=sys.stderr)
        print(f"  AWS (moto)      {resources.aws_endpoint_url}", file=sys.stderr)
        print(f"  model endpoint  {resources.model_endpoint_url}", file=sys.stderr)
        if stack.model_server:
            print(f'  model           "{stack.model_server.model_alias}" (jobs name it so)', file=sys.stderr)
        print(f"  request queue   {resources.request_queue_url}", file=sys.stderr)
        print(f"  function logs   {stack.log_dir}/", file=sys.stderr)
        print("Ctrl-C stops it.", file=sys.stderr, flush=True)
        while not stop_requested:
            time.sleep(STOP_POLL_S)
    finally:
        stack.stop()
        print("local stack stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
