"""``python -m llmbatch.bench`` (``llmbatch bench`` once wired): run the scenarios and print figures.

python -m llmbatch.bench                       # every scenario, every approach, import times
python -m llmbatch.bench --scenario rpm        # one scenario
python -m llmbatch.bench --write-docs          # also write docs/benchmarks.md (and its chart beside it)
python -m llmbatch.bench --scenario slots32 --skip-sweep --skip-parallel --skip-packing --skip-import-time
python -m llmbatch.bench --json out.json       # the raw figures, for scripts and tests
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llmbatch.bench import packing_scenario, parallel, sweep
from llmbatch.bench.baselines import GatherBaseline, SequentialBaseline
from llmbatch.bench.harness import SCENARIOS, Approach, BenchStack, OursApproach, RunResult, run_approach
from llmbatch.bench.importtime import TARGETS, heaviest_imports, measure_all
from llmbatch.bench.procs import ROOT
from llmbatch.bench.report import BenchReport, markdown_report, text_report

APPROACHES: dict[str, Callable[[BenchStack], Approach]] = {
    "sequential": SequentialBaseline,
    "gather": GatherBaseline,
    "ours": OursApproach,
}
DOCS_PATH = ROOT / "docs" / "benchmarks.md"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llmbatch.bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default: all")
    p.add_argument("--approach", action="append", choices=list(APPROACHES), help="repeatable; default: all three")
    p.add_argument("--requests", type=int, default=600, help="requests in the job (default 600)")
    p.add_argument(
        "--sequential-requests",
        type=int,
        default=60,
        help="the sequential baseline runs this prefix of the job (default 60; it does ~5 requests/s)",
    )
    p.add_argument("--concurrency", type=int, default=32, help="our worker's model-call concurrency (default 32)")
    p.add_argument("--latency-ms", type=float, default=None, help="override the endpoint's 200 ms per call")
    p.add_argument(
        "--faithful-moto",
        action="store_true",
        help="run moto without the benchmark's one-copy-per-table fix to TransactWriteItems (see docs)",
    )
    p.add_argument(
        "--sweep",
        type=_counts,
        default=sweep.CONCURRENCY,
        metavar="N,N,...",
        help=f"model calls per invocation to sweep (default {_listed(sweep.CONCURRENCY)})",
    )
    p.add_argument("--sweep-requests", type=int, default=sweep.REQUESTS, help="requests per sweep point")
    p.add_argument("--skip-sweep", action="store_true", help="skip the concurrency sweep")
    p.add_argument(
        "--parallel",
        type=_counts,
        default=None,
        metavar="N,N,...",
        help="model calls per container in the several-containers runs (default: --concurrency, and the "
        "endpoint's slots shared among the containers)",
    )
    p.add_argument("--parallel-containers", type=int, default=parallel.CONTAINERS, help="containers at once")
    p.add_argument(
        "--parallel-requests",
        type=int,
        default=None,
        help="requests of each several-containers run (default --requests)",
    )
    p.add_argument("--skip-parallel", action="store_true", help="skip the several-containers runs")
    p.add_argument(
        "--parallel-batch-size",
        type=int,
        default=parallel.BIG_BATCH,
        help="a bigger BatchSize for one more several-containers run at --concurrency calls each, with "
        "at least 2 batches per container (0: skip; default %(default)s)",
    )
    p.add_argument(
        "--packing-requests", type=int, default=packing_scenario.REQUESTS, help="requests of the packing comparison"
    )
    p.add_argument("--skip-packing", action="store_true", help="skip the packing comparison")
    p.add_argument("--skip-import-time", action="store_true", help="skip the cold-start import measurement")
    p.add_argument("--import-repeat", type=int, default=3)
    p.add_argument(
        "--write-docs",
        nargs="?",
        const=str(DOCS_PATH),
        default=None,
        metavar="PATH",
        help=f"write the figures as markdown (default path {DOCS_PATH.relative_to(ROOT)})",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the raw figures as JSON")
    return p


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected at least one number, each at least 1")
    return values


def _listed(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


def run_benchmark(args: argparse.Namespace, *, log: Callable[[str], None]) -> BenchReport:
    scenarios = [SCENARIOS[name] for name in (args.scenario or list(SCENARIOS))]
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
    settings = {
        "requests": args.requests,
        "sequential_requests": min(args.requests, args.sequential_requests),
        "concurrency": args.concurrency,
        "batch_size": stack.batch_size,
        "latency_ms": args.latency_ms,
        "faithful_moto": args.faithful_moto,
        "cpus": os.cpu_count(),
        "command": "python -m llmbatch.bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python -m llmbatch.bench",
    }
    report = BenchReport(
        scenarios=scenarios, results=results, settings=settings, sweep=points, parallel=several, packing=packing
    )
    if not args.skip_import_time:
        log("measuring import times ...")
        report.imports = measure_all(repeat=args.import_repeat)
        report.heaviest = heaviest_imports(TARGETS["worker"], top=None)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    counts = (args.requests, args.sequential_requests, args.concurrency, args.sweep_requests, args.packing_requests)
    if (
        min(counts) < 1
        or args.parallel_containers < 2
        or (args.parallel_requests or 1) < 1
        or args.parallel_batch_size < 0
    ):
        print(
            "--requests, --sequential-requests, --concurrency, --sweep-requests, --packing-requests and "
            "--parallel-requests must be at least 1, --parallel-containers at least 2, "
            "--parallel-batch-size at least 0",
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
        }
        Path(args.json).write_text(json.dumps(data, indent=2))
    if args.write_docs:
        path = Path(args.write_docs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown_report(report))
        print(f"wrote {path}", file=sys.stderr)
        if report.sweep:
            chart = path.parent / sweep.SVG_NAME
            chart.write_text(sweep.sweep_chart(report.sweep))
            print(f"wrote {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
