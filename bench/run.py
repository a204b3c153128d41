"""``python -m bench`` (``llmbatch bench`` once wired): run the scenarios and print figures.

python -m bench                       # every scenario, every approach, import times
python -m bench --scenario rpm        # one scenario
python -m bench --write-docs          # also write docs/benchmarks.md
python -m bench --json out.json       # the raw figures, for scripts and tests
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.baselines import GatherBaseline, SequentialBaseline
from bench.harness import SCENARIOS, Approach, BenchStack, OursApproach, RunResult, build_events, job_messages, measure
from bench.importtime import heaviest_imports, measure_all
from bench.procs import ROOT
from bench.report import BenchReport, markdown_report, text_report

APPROACHES: dict[str, Callable[[BenchStack], Approach]] = {
    "sequential": SequentialBaseline,
    "gather": GatherBaseline,
    "ours": OursApproach,
}
DOCS_PATH = ROOT / "docs" / "benchmarks.md"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
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


def run_benchmark(args: argparse.Namespace, *, log: Callable[[str], None]) -> BenchReport:
    scenarios = [SCENARIOS[name] for name in (args.scenario or list(SCENARIOS))]
    approaches = args.approach or list(APPROACHES)
    latency_s = None if args.latency_ms is None else args.latency_ms / 1000.0
    results: list[RunResult] = []
    with BenchStack(concurrency=args.concurrency, faithful_moto=args.faithful_moto) as stack:
        log(f"moto {stack.aws_url}, simulator {stack.sim_url}, batch size {stack.batch_size}")
        for scenario in scenarios:
            config = scenario.simulator_config(latency_s=latency_s)
            for name in approaches:
                n = min(args.requests, args.sequential_requests) if name == "sequential" else args.requests
                stack.clear_tables()
                job_id = stack.new_job(n)
                events = build_events(job_messages(job_id, n), stack.batch_size, stack.queue_arn)
                approach = APPROACHES[name](stack)
                try:
                    result = measure(stack, scenario, approach, events, job_id, sim_config=config)
                finally:
                    approach.close()
                log(
                    f"{scenario.name:8} {name:10} {result.requests:5} requests in {result.wall_s:6.2f} s: "
                    f"{result.outcome.succeeded} ok, {result.outcome.returned} returned"
                )
                results.append(result)
    settings = {
        "requests": args.requests,
        "sequential_requests": min(args.requests, args.sequential_requests),
        "concurrency": args.concurrency,
        "batch_size": stack.batch_size,
        "latency_ms": args.latency_ms,
        "faithful_moto": args.faithful_moto,
        "cpus": os.cpu_count(),
        "command": "python -m bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python -m bench",
    }
    report = BenchReport(scenarios=scenarios, results=results, settings=settings)
    if not args.skip_import_time:
        log("measuring import times ...")
        report.imports = measure_all(repeat=args.import_repeat)
        report.heaviest = heaviest_imports("import functions.worker.app")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests < 1 or args.sequential_requests < 1 or args.concurrency < 1:
        print("--requests, --sequential-requests and --concurrency must be at least 1", file=sys.stderr)
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
        }
        Path(args.json).write_text(json.dumps(data, indent=2))
    if args.write_docs:
        path = Path(args.write_docs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown_report(report))
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
