"""Printing the figures: a plain table per scenario for the console, and the same tables
in markdown for ``docs/benchmarks.md``."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmbatch.bench import e2e_report
from llmbatch.bench.e2e import E2ERun
from llmbatch.bench.harness import ADAPTIVE_CEILING, RunResult, Scenario
from llmbatch.bench.importtime import ImportTime
from llmbatch.bench.packing_scenario import CONCURRENCY as PACKING_CONCURRENCY
from llmbatch.bench.packing_scenario import SIMULATOR as PACKING_SIM
from llmbatch.bench.packing_scenario import PackingRun
from llmbatch.bench.parallel import ParallelRun
from llmbatch.bench.sweep import SVG_NAME, SweepPoint
from llmbatch.bench.time_budget import TimeBudget, time_budget

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
    #: Packages by the self time of their modules in the worker's import, heaviest first.
    heaviest: list[tuple[str, float]] = field(default_factory=list)
    sweep: list[SweepPoint] = field(default_factory=list)
    parallel: list[ParallelRun] = field(default_factory=list)
    packing: list[PackingRun] = field(default_factory=list)
    #: The local stack end to end (``--scenario local-e2e``).
    e2e: list[E2ERun] = field(default_factory=list)

    def for_scenario(self, name: str) -> dict[str, RunResult]:
        return {r.approach: r for r in self.results if r.scenario == name}


def _row(r: RunResult, label: str | None = None) -> list[str]:
    moto = r.moto_cpu_ms_per_request
    return [
        label or r.approach,
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


SWEEP_COLUMNS = (
    "calls per invocation",
    "requests",
    "ok",
    "wall s",
    "ok/s",
    "p50 ms",
    "p99 ms",
    "endpoint util",
    "endpoint max queued",
)


def _sweep_rows(points: Sequence[SweepPoint]) -> list[list[str]]:
    return [
        [
            str(p.concurrency),
            str(p.run.requests),
            str(p.run.outcome.succeeded),
            f"{p.run.wall_s:.2f}",
            f"{p.run.succeeded_per_s:.1f}",
            f"{p.run.p50_ms:.0f}",
            f"{p.run.p99_ms:.0f}",
            f"{p.run.utilisation:.2f}",
            str(int(p.run.sim.get("max_queued", 0))),
        ]
        for p in points
    ]


def _parallel_label(run: ParallelRun, template_batch: Any = None) -> str:
    batches = f", batches of {run.batch_size}" if template_batch and run.batch_size != template_batch else ""
    return f"ours, {run.containers} x {run.per_container}{batches}"


def _one_container(report: BenchReport) -> RunResult | None:
    """The slots32 scenario's run of our worker: one container, the reference."""
    return report.for_scenario("slots32").get("ours")


def _budgets(report: BenchReport) -> list[tuple[str, RunResult, TimeBudget]]:
    """(label, run, budget): the one-container reference, then each several-containers run."""
    runs: list[tuple[str, RunResult]] = [
        (_parallel_label(pr, report.settings.get("batch_size")), pr.run) for pr in report.parallel
    ]
    if (single := _one_container(report)) is not None:
        runs.insert(0, (f"ours, 1 x {single.concurrency_limit}", single))
    return [(label, run, b) for label, run in runs if (b := time_budget(run)) is not None]


BUDGET_COLUMNS = (
    "containers x calls",
    "container s",
    "prepare",
    "running records",
    "finishing writes",
    "outside the worker",
    "idle",
    "wall with no container running records",
    "calls served per container while running records",
    "records phase ms: measured / in whole waves / least",
)


def _budget_rows(budgets: Sequence[tuple[str, RunResult, TimeBudget]]) -> list[list[str]]:
    return [
        [
            label.removeprefix("ours, "),
            f"{b.container_s:.2f}",
            *(f"{b.share(x):.0%}" for x in (b.prepare_s, b.records_s, b.finish_s, b.outside_s, b.idle_s)),
            f"{b.none_running_s / b.wall_s:.0%}" if b.wall_s else "n/a",
            f"{b.served_while_running:.1f} of {b.limit}",
            f"{b.records_s / b.invocations * 1000:.0f} / {b.whole_waves_s * 1000:.0f} / {b.least_records_s * 1000:.0f}",
        ]
        for label, _, b in budgets
    ]


PACKING_COLUMNS = ("inputs per call (cap)", "requests", "calls", "wall s", "req/s")


def _packing_rows(runs: Sequence[PackingRun]) -> list[list[str]]:
    return [[str(r.cap), str(r.requests), str(r.calls), f"{r.wall_s:.2f}", f"{r.requests_per_s:.1f}"] for r in runs]


def _packing_summary(runs: Sequence[PackingRun]) -> str:
    off = next((r for r in runs if r.cap == 1), None)
    on = [r for r in runs if r.cap > 1]
    if off is None or not on:
        return ""
    parts = [
        f"cap {r.cap}: {_ratio(off.calls, r.calls)} fewer calls, {_ratio(r.requests_per_s, off.requests_per_s)} "
        "the requests per second"
        for r in on
    ]
    return "Against cap 1 (packing off): " + "; ".join(parts) + "."


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
    if report.sweep:
        lines += ["", "== ours against model calls per invocation (slots32, one container)"]
        lines += _aligned(SWEEP_COLUMNS, _sweep_rows(report.sweep))
    if report.parallel:
        lines += ["", "== ours in several containers at once (slots32)"]
        rows = [_row(pr.run, _parallel_label(pr, report.settings.get("batch_size"))) for pr in report.parallel]
        lines += _aligned(COLUMNS, rows)
        lines += ["", *_aligned(BUDGET_COLUMNS, _budget_rows(_budgets(report)))]
    if report.packing:
        lines += ["", "== request packing (/v1/embeddings, single-input requests)"]
        lines += _aligned(PACKING_COLUMNS, _packing_rows(report.packing))
        if summary := _packing_summary(report.packing):
            lines.append(summary)
    if report.e2e:
        lines += ["", f"== local-e2e: {e2e_report.TITLE}"]
        lines += _aligned(e2e_report.COLUMNS, e2e_report.rows(report.e2e))
        lines += ["", *e2e_report.targets(report.e2e)]
    if report.imports:
        lines += ["", "== cold-start import time (fresh interpreter, best of runs)"]
        lines += _aligned(IMPORT_COLUMNS, _import_rows(report))
        if report.heaviest:
            lines.append(
                "worker import, self time by package: "
                + ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in report.heaviest[:HEAVIEST_SHOWN])
            )
    return "\n".join(lines) + "\n"


def markdown_report(report: BenchReport) -> str:
    s = report.settings
    out = [
        "# Benchmarks",
        "",
        "<!-- Written by `python -m bench --write-docs`; edit llmbatch/bench/report.py, not this file. -->",
        "",
        f"Latest run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, "
        f"{platform.machine()}, {s.get('cpus', '?')} CPUs. Command: `{s.get('command', 'python -m bench')}`.",
        "",
        "## What is measured",
        "",
        "One process drives three handlers over the **same job** (the same chat-completion lines; a new job id per "
        "run) against the **same endpoint** (the simulator, `llmbatch/local/simulator.py`, in its own process, reset "
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
    out += _md_sweep(report)
    out += _md_parallel(report)
    out += _md_packing(report)
    if report.imports:
        out += ["## Cold start: import time", "", "Each in a fresh interpreter, timed around the import only.", ""]
        out += _md_table(IMPORT_COLUMNS, _import_rows(report))
        if report.heaviest:
            out += [
                "",
                "Where the worker's import time goes (`python -X importtime`, module self time by package): "
                + ", ".join(f"{p} {sec * 1000:.0f} ms" for p, sec in report.heaviest[:HEAVIEST_SHOWN])
                + ".",
            ]
        out += ["", *_cold_start_notes(report)]
        out.append("")
    out += _targets(report)
    out += e2e_report.markdown(report.e2e)
    out += [
        "## Caveats",
        "",
        "- One container, batches one after another (all but *Several containers at once*): each batch of 100 on "
        "32 slots ends with a partial wave (100 = 3 full waves + 4), so utilisation of one invocation stream is "
        "capped near 0.78 for any handler that does not start the next batch early; in AWS several invocations "
        "(WorkerMaxConcurrency) overlap, which *Several containers at once* measures. There the containers start "
        "together on a job already queued, so they run in step; in a long-running deployment they drift apart "
        "and one's gaps can fall on another's calls. **To reach >= 0.9 of an endpoint's slots**: make each "
        "invocation many waves long, so its last partial wave and its prepare and final write weigh little: "
        "`BatchSize` a multiple of `ModelCallConcurrency` and at least ~10 waves of it (with 32 slots: "
        "`ModelCallConcurrency` 32 and `BatchSize` 320 or 400, as the *batches of 400* run above, 0.91), and "
        "`WorkerMaxConcurrency` at least 2 so one invocation's gaps fall on another's calls; keep `BatchSize` under "
        "`ModelCallConcurrency` x (function timeout / typical call latency), as template.yaml says.",
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
        "- moto stands in for DynamoDB and SQS. Its TransactWriteItems deep-copies every table it names once per "
        "*action* (a 99-item transaction copied the results table 99 times, making our writes cost O(table x "
        "items) in the emulator); the local stack's moto (`llmbatch/local/moto_dynamodb.py`, used by the benchmark's "
        "moto process too) backs up only the items a transaction touches and puts those back if it fails, which "
        "is the same all-or-nothing outcome (`--faithful-moto` turns it off); the benchmark also empties the "
        "tables between runs. Its SQS walked every message of a queue on each send and receive; the local "
        "stack's standard queues are indexed instead (`llmbatch/local/moto_sqs.py`).",
        "",
    ]
    return "\n".join(out).rstrip() + "\n"


def splice_e2e_section(existing: str, report: BenchReport) -> str:
    """``existing`` docs with the end-to-end section replaced by this run's."""
    return e2e_report.splice(existing, e2e_report.markdown(report.e2e))


def _md_sweep(report: BenchReport) -> list[str]:
    if not report.sweep:
        return []
    first = report.sweep[0].run
    return [
        "## Throughput and p99 against concurrency",
        "",
        f"Our worker alone, one container as above, on the slots32 endpoint, {first.requests} requests per point; "
        "only the model calls allowed per invocation (the limits parameter's `max_concurrency`) change. "
        "Written by `llmbatch/bench/sweep.py`.",
        "",
        f"![Throughput and p99 latency against model calls per invocation]({SVG_NAME})",
        "",
        *_md_table(SWEEP_COLUMNS, _sweep_rows(report.sweep)),
        "",
    ]


def _md_parallel(report: BenchReport) -> list[str]:
    if not report.parallel:
        return []
    rows = [_row(pr.run, _parallel_label(pr, report.settings.get("batch_size"))) for pr in report.parallel]
    single = _one_container(report)
    if single is not None:
        rows.insert(0, _row(single, f"ours, 1 x {single.concurrency_limit}"))
    return [
        "## Several containers at once: endpoint utilisation",
        "",
        *_parallel_intro(report),
        "",
        *_md_table(COLUMNS, rows),
        "",
        "Where the containers' time went (shares of containers x wall; `llmbatch/bench/time_budget.py`):",
        "",
        *_md_table(BUDGET_COLUMNS, _budget_rows(_budgets(report))),
        "",
        *_parallel_findings(report),
        "",
    ]


def _parallel_intro(report: BenchReport) -> list[str]:
    n = report.parallel[0].containers
    own = report.settings.get("concurrency")
    slots = int(report.parallel[0].run.sim.get("slots", 0))
    settings = []
    template_batch = report.settings.get("batch_size")
    for pr in report.parallel:
        label = f"**{_parallel_label(pr, template_batch).removeprefix('ours, ')}**"
        if template_batch and pr.batch_size != template_batch:
            settings.append(
                f"{label} is that production setting with the stack's `BatchSize` parameter raised from "
                f"{template_batch} to {pr.batch_size}: fewer, longer invocations, so each batch's last, partial "
                "wave of calls weighs less (keep BatchSize under `ModelCallConcurrency` x the function's timeout / "
                "the endpoint's call latency, or records cut by the deadline come back and count toward the "
                "dead-letter queue's maxReceiveCount)."
            )
        elif pr.per_container == own:
            settings.append(
                f"{label} is what the event source mapping runs with this stack's settings: every container gets "
                f"the function's `ModelCallConcurrency` ({own} here), and the mapping adds containers while the "
                "queue has a backlog; so this one mirrors production, and calls beyond the endpoint's slots wait "
                "in its queue."
            )
        elif pr.per_container * pr.containers == slots:
            settings.append(
                f"{label} holds the total at the endpoint's {slots} slots, as an operator who sizes "
                "`ModelCallConcurrency` x `WorkerMaxConcurrency` to the endpoint would: no call waits at the "
                "endpoint, and only the overlap of the containers can fill its slots."
            )
        else:
            settings.append(f"{label}: {pr.per_container} model calls per container.")
    return [
        f"The slots32 endpoint again, with our worker in {n} container processes at once (`llmbatch/bench/parallel.py`; "
        "each a `llmbatch.local.lambda_runtime.ContainerProcess` as the local stack's poller makes them, running "
        "`Container.create` and `container.handle`), each taking the next batch of the same job as soon as it "
        "is free, as the event source mapping keeps its containers busy while the queue has a backlog. "
        f"The one-container run of slots32 is the first row. {' '.join(settings)} CPU ms/req here is the "
        "container processes' CPU."
    ]


#: Containers whose invocations end closer than this share of an invocation run "in step".
IN_STEP_SHARE = 0.1


def _step_clause(b: TimeBudget, run: RunResult) -> str:
    if b.ends_apart_s is None or not run.spans:
        return ""
    took = sum(e - s for _, s, e in run.spans) / len(run.spans)
    apart = f"their invocations ending {b.ends_apart_s * 1000:.0f} ms apart on average (one took {took * 1000:.0f} ms)"
    if b.ends_apart_s < IN_STEP_SHARE * took:
        return (
            f"; the containers ran in step, {apart}, so they prepared at the same time and their last, partial "
            "waves of calls coincided, neither filling the slots the other left idle"
        )
    return f"; the containers ran out of step, {apart}"


def _parallel_findings(report: BenchReport) -> list[str]:
    """Where each run's endpoint time went, in words, from its time budget."""
    lines = []
    for label, run, b in _budgets(report):
        if not b.wall_s or not b.invocations:
            continue
        lines.append(
            f"- {label.removeprefix('ours, ')}: utilisation **{run.utilisation:.2f}**. No container was running "
            f"records for {b.none_running_s / b.wall_s:.0%} of the wall (an invocation's prepare took "
            f"{b.prepare_s / b.invocations * 1000:.0f} ms on average: the live-limits read and the batched reads "
            f"of the jobs and of the results already stored{_step_clause(b, run)}). While running records, the "
            f"endpoint served {b.served_while_running:.1f} calls per container on average, of the {b.lanes:g} it "
            f"could at once (the lesser of its limit, {b.limit}, and its share of the endpoint's {b.slots} slots). "
            + _waves_sentence(b)
        )
    return lines


def _waves_sentence(b: TimeBudget) -> str:
    n, lanes = b.records_per_invocation, b.lanes
    full, last = int(n // lanes), n - (n // lanes) * lanes
    shape = f"{full} full and a last one of {last:g}" if last else f"{full} full ones"
    measured = b.records_s / b.invocations
    return (
        f"The records phase took {measured * 1000:.0f} ms per invocation: its {n:g} records make {b.waves} waves of "
        f"calls on {lanes:g} lanes ({shape}), {b.whole_waves_s * 1000:.0f} ms at {b.mean_call_s * 1000:.0f} ms a "
        f"call, where {b.least_records_s * 1000:.0f} ms would do if nothing were left idle"
        + (" in the last wave" if last else "")
        + f"; the remaining {max(0.0, measured - b.whole_waves_s) * 1000:.0f} ms went to the last results' write "
        "and the worker's own work between calls."
    )


def _md_packing(report: BenchReport) -> list[str]:
    if not report.packing:
        return []
    return [
        "## Request packing",
        "",
        "Single-input `/v1/embeddings` requests through the worker's packer (`shared/packing.py`) to the "
        "simulator, with packing off (cap 1) and on (`llmbatch/bench/packing_scenario.py`): every batch's records at once, "
        f"each call holding one of {PACKING_CONCURRENCY} slots of a limiter, on an endpoint of "
        f"{PACKING_SIM['slots']} slots that takes {PACKING_SIM['base_latency_s'] * 1000:.0f} ms per call plus "
        f"{PACKING_SIM['per_prompt_token_s'] * 1000:g} ms per prompt token (a packed call costs more than one "
        "input, far less than its inputs one by one). No AWS and no result writes: only what packing changes.",
        "",
        *_md_table(PACKING_COLUMNS, _packing_rows(report.packing)),
        "",
        _packing_summary(report.packing),
        "",
    ]


#: Packages named in "where the worker's import time goes".
HEAVIEST_SHOWN = 6
#: Imported by aiobotocore when installed (its optional httpx backend); here it comes with the
#: demo's packages (openai, llm), and the Lambda layer (shared/requirements.txt) lacks it.
NOT_IN_LAYER = "httpx2"


def _cold_start_notes(report: BenchReport) -> list[str]:
    by_package = dict(report.heaviest)
    notes = [
        "Loaded only when needed, so a Worker with openai endpoints and tracing off never imports them: the "
        "Bedrock and SageMaker endpoint code and their translations (when an endpoint of that kind is built, "
        "`shared/endpoints/factory.py`), the DeadLetter function's recorder (`shared/container.py`), the X-Ray "
        "SDK (when the stack's Tracing is Active); `tests/bench/test_cold_start_imports.py` keeps it so. The rest "
        "is what every invocation uses: aiobotocore, which imports botocore and aiohttp itself (so aiohttp costs "
        "nothing extra for openai endpoints), pydantic for the message schema, Powertools' logger, metrics and "
        "batch processor."
    ]
    if NOT_IN_LAYER in by_package:
        notes.append(
            f"aiobotocore also imports {NOT_IN_LAYER} when it is installed ({by_package[NOT_IN_LAYER] * 1000:.0f} ms "
            "here): this environment has it for the demo's `openai` package; the Lambda layer "
            "(`shared/requirements.txt`) does not, so a deployed cold start skips it."
        )
    return [" ".join(notes)]


def _targets(report: BenchReport) -> list[str]:
    """Issue 5's targets, against this run's figures."""
    lines = ["## Issue 5's targets against this run", ""]
    slots = report.for_scenario("slots32")
    if "ours" in slots:
        ours = slots["ours"]
        several = "".join(
            f"; **{pr.run.utilisation:.2f}** with {pr.containers} containers x {pr.per_container} calls"
            + (f" in batches of {pr.batch_size}" if pr.batch_size != report.settings.get("batch_size") else "")
            for pr in report.parallel
        )
        lines.append(
            f"- Endpoint utilisation >= 0.9 with no rate limit: **{ours.utilisation:.2f}** (slots32, one container)"
            f"{several}{' (see *Several containers at once*)' if several else ''}."
        )
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
