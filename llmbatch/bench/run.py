"""``llmbatch bench`` (or ``python -m llmbatch.bench``): run the scenarios and print figures.

llmbatch bench                       # every scenario, every approach, import times
llmbatch bench --scenario rpm        # one scenario
llmbatch bench --write-docs          # also write docs/benchmarks.md (and its chart beside it)
llmbatch bench --scenario slots32 --skip-sweep --skip-parallel --skip-packing --skip-import-time
llmbatch bench --json out.json       # the raw figures, for scripts and tests
llmbatch bench --scenario local-e2e --write-docs   # only the local stack end to end (llmbatch/bench/e2e.py)
llmbatch bench --scenario local-e2e --e2e-large 100000   # ... plus the 100,000-request job (~12 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from llmbatch.bench import e2e, fairness, packing_scenario, parallel, sweep
from llmbatch.bench.baselines import GatherBaseline, SequentialBaseline
from llmbatch.bench.harness import SCENARIOS, Approach, BenchStack, OursApproach, RunResult, Scenario, run_approach
from llmbatch.bench.importtime import TARGETS, heaviest_imports, measure_all
from llmbatch.bench.procs import ROOT
from llmbatch.bench.report import BenchReport, markdown_report, splice_e2e_section, text_report

APPROACHES: dict[str, Callable[[BenchStack], Approach]] = {
    "sequential": SequentialBaseline,
    "gather": GatherBaseline,
    "ours": OursApproach,
}
DOCS_PATH = ROOT / "docs" / "benchmarks.md"
#: The end-to-end scenario's name (``llmbatch/bench/e2e.py``): not an in-process scenario of ``SCENARIOS``.
E2E = "local-e2e"


def _listed(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


class Counts(click.ParamType):
    """``N,N,...``: whole numbers separated by commas, each at least 1."""

    name = "N,N,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):  # a default
            return value
        try:
            values = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"expected whole numbers separated by commas, got {value!r}", param, ctx)
        if not values or min(values) < 1:
            self.fail("expected at least one number, each at least 1", param, ctx)
        return values


@click.command("bench", help="the benchmark: our worker against two baselines (see docs/benchmarks.md)")
@click.option(
    "--scenario",
    multiple=True,
    type=click.Choice([*sorted(SCENARIOS), E2E]),
    help=f"repeatable; default: all. {E2E}: the local stack end to end (`local up`, `submit`, `status`); "
    "chosen alone it runs nothing else, and --write-docs then replaces only its section of the docs",
)
@click.option("--approach", multiple=True, type=click.Choice(list(APPROACHES)), help="repeatable; default: all three")
@click.option("--requests", type=int, default=600, help="requests in the job (default 600)")
@click.option(
    "--sequential-requests",
    type=int,
    default=60,
    help="the sequential baseline runs this prefix of the job (default 60; it does ~5 requests/s)",
)
@click.option("--concurrency", type=int, default=32, help="our worker's model-call concurrency (default 32)")
@click.option("--latency-ms", type=float, default=None, help="override the endpoint's 200 ms per call")
@click.option(
    "--faithful-moto",
    is_flag=True,
    help="run moto without the benchmark's one-copy-per-table fix to TransactWriteItems (see docs)",
)
@click.option(
    "--sweep",
    type=Counts(),
    default=sweep.CONCURRENCY,
    help=f"model calls per invocation to sweep (default {_listed(sweep.CONCURRENCY)})",
)
@click.option("--sweep-requests", type=int, default=sweep.REQUESTS, help="requests per sweep point")
@click.option("--skip-sweep", is_flag=True, help="skip the concurrency sweep")
@click.option(
    "--parallel",
    type=Counts(),
    default=None,
    help="model calls per container in the several-containers runs (default: --concurrency, and the "
    "endpoint's slots shared among the containers)",
)
@click.option("--parallel-containers", type=int, default=parallel.CONTAINERS, help="containers at once")
@click.option(
    "--parallel-requests",
    type=int,
    default=None,
    help="requests of each several-containers run (default --requests)",
)
@click.option("--skip-parallel", is_flag=True, help="skip the several-containers runs")
@click.option(
    "--parallel-batch-size",
    type=int,
    default=parallel.BIG_BATCH,
    help="a bigger BatchSize for one more several-containers run at --concurrency calls each, with "
    f"at least 2 batches per container (0: skip; default {parallel.BIG_BATCH})",
)
@click.option(
    "--packing-requests",
    type=int,
    default=packing_scenario.REQUESTS,
    help="requests of the packing comparison",
)
@click.option("--skip-packing", is_flag=True, help="skip the packing comparison")
@click.option("--skip-import-time", is_flag=True, help="skip the cold-start import measurement")
@click.option(
    "--e2e-requests",
    type=Counts(),
    default=e2e.SIZES,
    help=f"{E2E}: the jobs' sizes, each on the endpoint's full capacity (default {_listed(e2e.SIZES)})",
)
@click.option(
    "--e2e-rpm-requests",
    type=int,
    default=e2e.RPM_REQUESTS,
    help=f"{E2E}: the RPM-bound job's size (RPM {e2e.RPM_LIMIT} in the limits parameter; 0: skip; "
    f"default {e2e.RPM_REQUESTS})",
)
@click.option(
    "--e2e-large",
    type=int,
    default=0,
    metavar="N",
    help=f"{E2E}: one more job of N requests after the others, e.g. {e2e.LARGE} (about 12 minutes); "
    "opt-in, too long for `make bench` (default: none)",
)
@click.option(
    "--e2e-fairness",
    type=int,
    default=fairness.BIG,
    metavar="N",
    help=f"{E2E}: a {fairness.SMALL}-request job behind one of N requests, against its time alone "
    f"(0: skip; default {fairness.BIG})",
)
@click.option("--import-repeat", type=int, default=3)
@click.option(
    "--write-docs",
    is_flag=False,
    flag_value=str(DOCS_PATH),
    default=None,
    metavar="[PATH]",
    help=f"write the figures as markdown (default path {DOCS_PATH.relative_to(ROOT)})",
)
@click.option("--json", default=None, metavar="PATH", help="write the raw figures as JSON")
def command(**options: Any) -> int:
    # The options as the attributes the benchmark's functions read (they predate click).
    return run(argparse.Namespace(**options))


def run_benchmark(args: argparse.Namespace, *, log: Callable[[str], None]) -> BenchReport:
    chosen = args.scenario or [*SCENARIOS, E2E]
    scenarios = [SCENARIOS[name] for name in chosen if name != E2E]
    if not scenarios:  # the end-to-end runs alone
        report = BenchReport(scenarios=[], results=[], settings=_settings(args, batch_size=None))
    else:
        report = _run_in_process(args, scenarios, log=log)
    if E2E in chosen:
        plan = e2e.E2EPlan(sizes=tuple(args.e2e_requests), rpm_requests=args.e2e_rpm_requests, large=args.e2e_large)
        report.e2e = e2e.run_e2e(plan, log=log)
        if args.e2e_fairness:
            report.fairness = fairness.run_fairness(args.e2e_fairness, log=log)
    return report


def _settings(args: argparse.Namespace, *, batch_size: int | None) -> dict[str, object]:
    return {
        "requests": args.requests,
        "sequential_requests": min(args.requests, args.sequential_requests),
        "concurrency": args.concurrency,
        "batch_size": batch_size,
        "latency_ms": args.latency_ms,
        "faithful_moto": args.faithful_moto,
        "cpus": os.cpu_count(),
        "command": "llmbatch bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "llmbatch bench",
    }


def _run_in_process(args: argparse.Namespace, scenarios: list[Scenario], *, log: Callable[[str], None]) -> BenchReport:
    approaches = args.approach or list(APPROACHES)
    latency_s = None if args.latency_ms is None else args.latency_ms / 1000.0
    results: list[RunResult] = []
    with BenchStack(concurrency=args.concurrency, faithful_moto=args.faithful_moto) as stack:
        log(f"moto {stack.aws_url}, simulator {stack.sim_url}, batch size {stack.batch_size}")
        for scenario in scenarios:
            for name in approaches:
                n = min(args.requests, args.sequential_requests) if name == "sequential" else args.requests
                result = run_approach(stack, scenario, APPROACHES[name], n, latency_s=latency_s)
                log(
                    f"{scenario.name:8} {name:10} {result.requests:5} requests in {result.wall_s:6.2f} s: "
                    f"{result.outcome.succeeded} ok, {result.outcome.returned} returned"
                )
                results.append(result)
        points = (
            []
            if args.skip_sweep
            else sweep.run_sweep(stack, args.sweep, requests=args.sweep_requests, latency_s=latency_s, log=log)
        )
        several = (
            []
            if args.skip_parallel
            else parallel.run_parallel(
                stack,
                args.parallel or parallel.default_per_container(args.concurrency, args.parallel_containers),
                containers=args.parallel_containers,
                requests=args.parallel_requests or args.requests,
                latency_s=latency_s,
                log=log,
            )
        )
        if several and args.parallel_batch_size:
            big = args.parallel_batch_size
            several += parallel.run_parallel(
                stack,
                [args.concurrency],
                containers=args.parallel_containers,
                requests=max(args.parallel_requests or args.requests, 2 * args.parallel_containers * big),
                batch_size=big,
                latency_s=latency_s,
                log=log,
            )
    packing = [] if args.skip_packing else packing_scenario.run_packing_scenario(requests=args.packing_requests)
    if packing:
        log("packing:\n" + packing_scenario.text_table(packing))
    settings = _settings(args, batch_size=stack.batch_size)
    report = BenchReport(
        scenarios=scenarios, results=results, settings=settings, sweep=points, parallel=several, packing=packing
    )
    if not args.skip_import_time:
        log("measuring import times ...")
        report.imports = measure_all(repeat=args.import_repeat)
        report.heaviest = heaviest_imports(TARGETS["worker"], top=None)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmbatch.bench``: the same command as ``llmbatch bench``, its exit code returned."""
    try:
        rv = command.main(
            args=list(argv) if argv is not None else None, prog_name="llmbatch bench", standalone_mode=False
        )
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return rv if isinstance(rv, int) else 0


def run(args: argparse.Namespace) -> int:
    """The benchmark the options describe: its figures printed, and written where asked."""
    counts = (args.requests, args.sequential_requests, args.concurrency, args.sweep_requests, args.packing_requests)
    if (
        min(counts) < 1
        or args.parallel_containers < 2
        or (args.parallel_requests or 1) < 1
        or args.parallel_batch_size < 0
        or args.e2e_rpm_requests < 0
        or args.e2e_large < 0
    ):
        print(
            "--requests, --sequential-requests, --concurrency, --sweep-requests, --packing-requests and "
            "--parallel-requests must be at least 1, --parallel-containers at least 2, "
            "--parallel-batch-size, --e2e-rpm-requests and --e2e-large at least 0",
            file=sys.stderr,
        )
        return 2
    report = run_benchmark(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(text_report(report), end="")
    if args.json:
        data = {
            "settings": report.settings,
            "runs": [r.to_dict() for r in report.results],
            "imports": {
                k: {"statement": v.statement, "best_s": v.best_s, "runs_s": list(v.runs_s)}
                for k, v in report.imports.items()
            },
            "sweep": [{"concurrency": p.concurrency, **p.run.to_dict()} for p in report.sweep],
            "parallel": [
                {
                    "containers": r.containers,
                    "per_container": r.per_container,
                    "batch_size": r.batch_size,
                    **r.run.to_dict(),
                }
                for r in report.parallel
            ],
            "packing": [{**dataclasses.asdict(r), "requests_per_s": r.requests_per_s} for r in report.packing],
            "e2e": [r.to_dict() for r in report.e2e],
            "fairness": [r.to_dict() for r in report.fairness],
        }
        Path(args.json).write_text(json.dumps(data, indent=2))
    if args.write_docs:
        path = Path(args.write_docs)
        path.parent.mkdir(parents=True, exist_ok=True)
        only_e2e = bool(report.e2e) and not (report.results or report.sweep or report.parallel or report.packing)
        if only_e2e and path.exists():
            path.write_text(splice_e2e_section(path.read_text(), report))
        else:
            path.write_text(markdown_report(report))
        print(f"wrote {path}", file=sys.stderr)
        if report.sweep:
            chart = path.parent / sweep.SVG_NAME
            chart.write_text(sweep.sweep_chart(report.sweep))
            print(f"wrote {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
