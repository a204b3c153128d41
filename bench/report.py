"""Printing the figures: a plain table per scenario for the console, and the same tables
in markdown for ``docs/benchmarks.md``."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.harness import ADAPTIVE_CEILING, RunResult, Scenario
from bench.importtime import ImportTime

SERVICES = ("dynamodb", "sqs", "ssm")

COLUMNS = (
    "approach",
    "requests",
    "ok",
    "returned",
    "failed",
    "wall s",
    "req/s",
    "ok/s",
    "tokens/s",
    "mean ms",
    "p50 ms",
    "p99 ms",
    "error rate",
    "endpoint util",
    "endpoint max queued",
    "calls limit",
    "429s",
    "DynamoDB/req",
    "SQS/req",
    "SSM/req",
    "CPU ms/req",
    "moto CPU ms/req",
)


@dataclass
class BenchReport:
    scenarios: list[Scenario]
    results: list[RunResult]
    settings: dict[str, Any]
    imports: dict[str, ImportTime] = field(default_factory=dict)
    heaviest: list[tuple[str, float]] = field(default_factory=list)

    def for_scenario(self, name: str) -> dict[str, RunResult]:
        return {r.approach: r for r in self.results if r.scenario == name}


def _row(r: RunResult) -> list[str]:
    moto = r.moto_cpu_ms_per_request
    return [
        r.approach,
        str(r.requests),
        str(r.outcome.succeeded),
        str(r.outcome.returned),
        str(r.outcome.failed),
        f"{r.wall_s:.2f}",
        f"{r.requests_per_s:.1f}",
        f"{r.succeeded_per_s:.1f}",
        f"{r.tokens_per_s:.0f}",
        f"{r.mean_ms:.0f}",
        f"{r.p50_ms:.0f}",
        f"{r.p99_ms:.0f}",
        f"{r.error_rate:.3f}",
        f"{r.utilisation:.2f}",
        str(int(r.sim.get("max_queued", 0))),
        "-" if r.concurrency_limit is None else str(r.concurrency_limit),
        str(r.rate_limited_429),
        *(f"{r.calls_per_request(s):.3f}" for s in SERVICES),
        f"{r.cpu_ms_per_request:.2f}",
        "n/a" if moto is None else f"{moto:.2f}",
    ]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


RATIO_COLUMNS = ("vs", "throughput (ok/s)", "p99 latency", "AWS calls/req", "DynamoDB writes/req", "CPU ms/req")

_WRITE_OPS = frozenset({"put_item", "transact_write_items", "batch_write_item", "update_item", "delete_item"})


def writes_per_request(r: RunResult) -> float:
    writes = sum(n for op, n in r.aws_calls.get("dynamodb", {}).items() if op in _WRITE_OPS)
    return writes / r.requests if r.requests else 0.0


def _ratio_rows(runs: dict[str, RunResult]) -> list[list[str]]:
    ours = runs.get("ours")
    rows: list[list[str]] = []
    if ours is None:
        return rows
    for name in ("sequential", "gather"):
        base = runs.get(name)
        if base is None:
            continue
        rows.append(
            [
                f"ours / {name}",
                _ratio(ours.succeeded_per_s, base.succeeded_per_s),
                _ratio(ours.p99_ms, base.p99_ms),
                _ratio(ours.calls_per_request(), base.calls_per_request()),
                _ratio(writes_per_request(ours), writes_per_request(base)),
                _ratio(ours.cpu_ms_per_request, base.cpu_ms_per_request),
            ]
        )
    return rows


def _aligned(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _md_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _import_rows(report: BenchReport) -> list[list[str]]:
    base = report.imports.get("powertools")
    return [
        [
            name,
            f"`{t.statement}`",
            f"{t.best_s * 1000:.0f}",
            ", ".join(f"{s * 1000:.0f}" for s in t.runs_s),
            _ratio(t.best_s, base.best_s) if base else "n/a",
        ]
        for name, t in report.imports.items()
    ]


IMPORT_COLUMNS = ("handler", "imports", "best ms", "runs ms", "vs bare Powertools")


def text_report(report: BenchReport) -> str:
    lines: list[str] = []
    for sc in report.scenarios:
        runs = report.for_scenario(sc.name)
        if not runs:
            continue
        lines += ["", f"== {sc.name}: {sc.title}"]
        lines += _aligned(COLUMNS, [_row(r) for r in runs.values()])
        ratios = _ratio_rows(runs)
        if ratios:
            lines += ["", *_aligned(RATIO_COLUMNS, ratios)]
    if report.imports:
        lines += ["", "== cold-start import time (fresh interpreter, best of runs)"]
        lines += _aligned(IMPORT_COLUMNS, _import_rows(report))
        if report.heaviest:
            lines.append(
                "worker import, self time by package: "
                + ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in report.heaviest)
            )
    return "\n".join(lines) + "\n"


def markdown_report(report: BenchReport) -> str:
    s = report.settings
    out = [
        "# Benchmarks",
        "",
        "<!-- Written by `python -m bench --write-docs`; edit bench/report.py, not this file. -->",
        "",
        f"Latest run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, "
        f"{platform.machine()}, {s.get('cpus', '?')} CPUs. Command: `{s.get('command', 'python -m bench')}`.",
        "",
        "## What is measured",
        "",
        "One process drives three handlers over the **same job** (the same chat-completion lines; a new job id per "
        "run) against the **same endpoint** (the simulator, `local_stack/simulator.py`, in its own process, reset "
        "and reseeded before every run) and the same DynamoDB tables (moto's server, in its own process):",
        "",
        f"- **ours**: the real worker: `Container.create(WorkerConfig.from_env(...))` with the Worker function's "
        f"environment from `template.yaml` (model-call concurrency {s.get('concurrency')}), `container.handle(event, ctx)`.",
        "- **sequential**: the loop most samples use: per record one `requests` call, then one boto3 `put_item`.",
        "- **gather**: Powertools' `AsyncBatchProcessor` with `async_process_partial_response` (an unbounded "
        "gather): per record one aiohttp call, then one aiobotocore `put_item`.",
        "",
        f"Events are SQS-shaped batches of the template's BatchSize ({s.get('batch_size')}), invoked one after "
        "another as one Lambda container would run them (no SQS polling, so the figures are the handlers'). Each "
        "record is handled once: a record a handler gives back (`batchItemFailures`) is counted as *returned* "
        "and not redelivered. "
        f"The sequential baseline runs the first {s.get('sequential_requests')} requests of the job (its rate "
        "is steady from the first record; the whole job would take minutes).",
        "",
        "Columns: *ok* stored answers; *returned* records handed back for retry; *failed* stored as failed; "
        "*req/s* records handled per second, *ok/s* answers stored per second; latency is per successful "
        "request, from its handler starting to the answer (including any wait for a slot, ours in its limiter, "
        "the baselines' in the endpoint's queue); *error rate* = (returned + failed) / requests; *endpoint util* "
        "= the simulator's busy slot-seconds / (slots x wall); *endpoint max queued* the most requests waiting "
        "for a slot at the simulator at once; *calls limit* our worker's model calls allowed in flight at the end "
        "(its limiter; it moves with adaptive concurrency); *429s* sent by the simulator; AWS calls per request "
        "by service, as counted by each handler (ours: `store.calls`, `queue.calls`, the rate-limit bucket's "
        "`calls` and the boto3 calls of its live-limits read); *CPU ms/req* is this process's CPU (`time.process_time()`), i.e. the handler and its "
        "SDKs, without moto or the simulator; *moto CPU ms/req* is the AWS emulator's process, for scale only.",
        "",
    ]
    for sc in report.scenarios:
        runs = report.for_scenario(sc.name)
        if not runs:
            continue
        out += [f"## {sc.name}: {sc.title}", ""]
        out += _md_table(COLUMNS, [_row(r) for r in runs.values()])
        ratios = _ratio_rows(runs)
        if ratios:
            out += ["", *_md_table(RATIO_COLUMNS, ratios)]
        out.append("")
    if report.imports:
        out += ["## Cold start: import time", "", "Each in a fresh interpreter, timed around the import only.", ""]
        out += _md_table(IMPORT_COLUMNS, _import_rows(report))
        if report.heaviest:
            out += [
                "",
                "Where the worker's import time goes (`python -X importtime`, module self time by package): "
                + ", ".join(f"{p} {sec * 1000:.0f} ms" for p, sec in report.heaviest)
                + ".",
            ]
        out.append("")
    out += _targets(report)
    out += [
        "## Caveats",
        "",
        "- One container, batches one after another: each batch of 100 on 32 slots ends with a partial wave "
        "(100 = 3 full waves + 4), so utilisation of one invocation stream is capped near 0.78 for any handler "
        "that does not start the next batch early; in AWS several invocations (WorkerMaxConcurrency) overlap.",
        "- Latency counts waiting for a slot: the sequential loop never waits, so its p99 is the bare call's; "
        "ours and gather queue 100 records on 32 slots (ours in its limiter, gather in the endpoint's queue); "
        "under the RPM limit ours also waits there for its share of the limit.",
        "- No redelivery: a returned record is counted, not retried, so the RPM scenario shows the first pass "
        "only (what a baseline sends beyond the limit comes back as 429s).",
        "- RPM scenario: the simulator's bucket starts empty (steady state, not a fresh minute's burst), and our "
        "worker's global bucket (a DynamoDB item, made at the first call) starts empty too, so the first calls "
        "wait for it to fill; *steady state* leaves out the first invocation, which pays that and the cold start. "
        "One container runs here; several sharing one bucket are tested in `tests/functional/test_rate_limits.py`.",
        "- Adaptive scenario: a new container's limit starts at 4 and doubles per window of calls until latency "
        "shows a queue at the endpoint, so part of this short run goes to finding the slots; a container keeps "
        "what it found for its next invocations.",
        "- moto stands in for DynamoDB and SQS. Its TransactWriteItems deep-copies the whole table once per "
        "*action* (a 99-item transaction copied the results table 99 times, making our writes cost O(table x "
        "items) in the emulator); the benchmark's moto process copies each table once per call instead, which "
        "is the same behaviour (`bench/procs.py`; `--faithful-moto` turns it off), and empties the tables "
        "between runs. `local_stack/moto_server.py` still has the per-action copies.",
        "",
    ]
    return "\n".join(out).rstrip() + "\n"


def _targets(report: BenchReport) -> list[str]:
    """Issue 5's targets, against this run's figures."""
    lines = ["## Issue 5's targets against this run", ""]
    slots = report.for_scenario("slots32")
    if "ours" in slots:
        ours = slots["ours"]
        lines.append(f"- Endpoint utilisation >= 0.9 with no rate limit: **{ours.utilisation:.2f}** (slots32).")
        if "sequential" in slots:
            seq = slots["sequential"]
            ratio = ours.succeeded_per_s / seq.succeeded_per_s if seq.succeeded_per_s else 0.0
            lines.append(f"- >= 10x the sequential baseline's throughput on 32 slots: **{ratio:.1f}x**.")
    rpm = report.for_scenario("rpm")
    if "ours" in rpm:
        ours = rpm["ours"]
        limit = next((sc.simulator.get("rpm_limit") for sc in report.scenarios if sc.name == "rpm"), None)
        share = ours.rate_limited_429 / ours.endpoint_calls if ours.endpoint_calls else 0.0
        allowed = (limit / 60.0) if limit else 0.0
        lines.append(
            f"- With an RPM limit: >= 0.95 of the allowed rate with < 1% 429s: **{ours.steady_succeeded_per_s / allowed:.2f}** "
            f"of the allowed rate at steady state (every invocation but the first; "
            f"{ours.succeeded_per_s / allowed:.2f} over the whole run, cold start and empty bucket included), "
            f"**{share:.1%}** of calls answered 429."
            if allowed
            else "- RPM limit: n/a"
        )
    adaptive = report.for_scenario("adaptive")
    if "ours" in adaptive:
        ours = adaptive["ours"]
        lines.append(
            f"- Adaptive concurrency finds the endpoint's {int(ours.sim.get('slots', 0))} slots on its own: its limit ended at "
            f"**{ours.concurrency_limit}** (of up to {ADAPTIVE_CEILING}); the endpoint queued at most "
            f"**{int(ours.sim.get('max_queued', 0))}** requests, utilisation **{ours.utilisation:.2f}**."
        )
    for name, runs in ((sc.name, report.for_scenario(sc.name)) for sc in report.scenarios):
        if "ours" in runs:
            ours = runs["ours"]
            lines.append(
                f"- <= 0.1 DynamoDB writes and <= 0.1 SQS calls per request ({name}): "
                f"**{writes_per_request(ours):.3f}** writes, **{ours.calls_per_request('sqs'):.3f}** SQS calls."
            )
    return [*lines, ""]
